"""Notebook 07's figures: recall bars with intervals beside chance, and the report comparison
with the anatomies whose findings differ shaded and named."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from cagcl_mini.anatomy import ANATOMY_NAMES, NUM_ANATOMIES  # noqa: E402
from cagcl_mini.evaluation.retrieval import retrieval_from_embeddings  # noqa: E402
from cagcl_mini.viz import reports as viz  # noqa: E402


def _results(n: int = 40) -> dict:
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(n, 8, generator=g), dim=1)
    return {
        name: retrieval_from_embeddings(
            x, x + noise * torch.randn(n, 8, generator=g), n_bootstrap=50
        )
        for name, noise in (("fvlm", 0.6), ("cagcl", 0.2))
    }


def test_recall_bars_per_model_with_intervals_and_the_chance_bar():
    results = _results()
    fig = viz.plot_recall_at_k(results, title="retrieval")
    assert len(fig.axes) == 2 and [a.get_title() for a in fig.axes] == list(viz.DIRECTIONS.values())
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in bars] == ["fvlm", "cagcl", "random (k/N, N=40)"]
    heights = [[p.get_height() for p in c.patches] for c in bars]
    assert heights[2] == pytest.approx([1 / 40, 5 / 40, 10 / 40])
    assert heights[1] == pytest.approx(
        [results["cagcl"]["image_to_text"][f"recall@{k}"] for k in (1, 5, 10)]
    )
    assert (
        sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 2
    )  # the models, not chance
    fig._repr_png_()


def test_recall_bars_take_the_bench_keys_and_name_a_missing_k():
    row = {"image_to_text": {"recall_at_1": 0.5, "recall_at_1_ci95": [0.4, 0.6]},
           "text_to_image": {"recall_at_1": 0.3}, "n": 10}  # fmt: skip
    fig = viz.plot_recall_at_k({"cagcl": row}, ks=(1,))
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert bars[0].patches[0].get_height() == 0.5 and bars[1].patches[0].get_height() == 0.1
    with pytest.raises(KeyError, match="no recall@5 .or recall_at_5. in the retrieval result"):
        viz.plot_recall_at_k({"cagcl": row}, ks=(5,))
    with pytest.raises(ValueError, match="direction 'sideways': choose from image_to_text"):
        viz.plot_recall_at_k({"cagcl": row}, directions=("sideways",))


def test_report_comparison_shades_and_names_the_differing_anatomies():
    lung, kidney = ANATOMY_NAMES.index("lung"), ANATOMY_NAMES.index("kidney")
    true = [f"The {name} is normal." for name in ANATOMY_NAMES]
    generated = list(true)
    true[lung] = "A 7 mm nodule is seen in the right lung."
    generated[kidney] = "A renal cyst is present."
    true[ANATOMY_NAMES.index("spleen")] = generated[ANATOMY_NAMES.index("spleen")] = ""
    fig = viz.plot_report_comparison(generated, true)
    ax = fig.axes[0]
    shaded = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(shaded) == 2
    texts = [t.get_text() for t in ax.texts]
    assert "≠ findings: Lung nodule" in texts and "≠ findings: Renal cyst" in texts
    assert texts.count("≠ findings: normal") == 2 and texts.count("(absent)") == 2
    assert ax.get_title(loc="left") == f"2 of {NUM_ANATOMIES} anatomies differ in their findings"
    assert "A 7 mm nodule is seen in the right lung." in texts
    fig._repr_png_()
    same = viz.plot_report_comparison(true, true)
    assert not [p for p in same.axes[0].patches if isinstance(p, Rectangle)]
    with pytest.raises(ValueError, match="generated: expected K="):
        viz.plot_report_comparison(generated[:3], true)


def test_report_comparison_wraps_long_lines_within_their_column():
    lung = ANATOMY_NAMES.index("lung")
    true = [f"The {name} is normal." for name in ANATOMY_NAMES]
    generated = list(true)
    true[lung] = (
        "Centrilobular emphysematous changes are present in both lungs. A 28 mm nodule is seen "
        "in the left lung. There is smooth interlobular septal thickening in both lungs. There "
        "is mosaic perfusion of the lung parenchyma."
    )
    fig = viz.plot_report_comparison(generated, true, width=40)
    texts = fig.axes[0].texts
    body = [t for t in texts if t.get_fontsize() == 8.5]
    assert body and max(len(t.get_text()) for t in body) <= 40
    findings_start = next(i for i, t in enumerate(body) if t.get_text().startswith("≠ findings: E"))
    wrapped = body[findings_start : findings_start + 3]
    assert all(t.get_color() == "#c0392b" for t in wrapped)  # the wrapped findings stay marked
    joined = " ".join(t.get_text() for t in wrapped)
    assert "Lung nodule" in joined and "Mosaic attenuation pattern" in joined
