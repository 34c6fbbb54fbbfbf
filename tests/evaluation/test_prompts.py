"""Prompt families from the user: the YAML format and its errors, ensembles and expansion, scores
equal to the built-in families', and the ``--prompts`` option of ``cagcl-mini evaluate``."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from cagcl_mini.anatomy import (
    ABNORMALITIES,
    ALL_LABELS,
    ANATOMY_NAMES,
    NUM_ANATOMIES,
    PROMPT_FAMILIES,
    prompt_family_names,
    prompt_pair,
)
from cagcl_mini.cli import evaluate as cli_evaluate
from cagcl_mini.cli.main import build_parser
from cagcl_mini.cli.main import main as cli_main
from cagcl_mini.evaluation import zero_shot
from cagcl_mini.evaluation.embed import EmbeddedSplit
from cagcl_mini.evaluation.prompts import (
    PromptFamily,
    PromptFileError,
    builtin_families,
    family_from_templates,
    load_prompts,
    parse_prompts,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prompts.yaml"
NAMES = [ab.name for ab in ABNORMALITIES]
D = 8


def _vec(text: str) -> torch.Tensor:
    """A fixed vector per string, of varying length (so normalisation matters)."""
    g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
    return torch.randn(D, generator=g) * (1.0 + zlib.crc32(text.encode()) % 3)


class TextModel:
    """Stand-in model: ``encode_text`` gives each string its own fixed vector."""

    training = False

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode_text(self, texts):
        self.calls.append(list(texts))
        return torch.stack([_vec(t) for t in texts])

    def scale(self):
        return torch.tensor(10.0)

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def random_split(n: int = 24, seed: int = 0) -> EmbeddedSplit:
    """Random unit anatomy embeddings, random labels with both classes in every column."""
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(n, NUM_ANATOMIES, D, generator=g), dim=-1)
    present = torch.ones(n, NUM_ANATOMIES, dtype=torch.bool)
    labels = (torch.rand(n, len(ALL_LABELS), generator=g) < 0.5).float()
    labels[0], labels[1] = 0.0, 1.0
    texts = [["" for _ in ANATOMY_NAMES] for _ in range(n)]
    return EmbeddedSplit(
        v=v, present=present, labels=labels, abnormal=present.clone(),
        ids=[str(i) for i in range(n)], texts=texts,
    )  # fmt: skip


# ----------------------------------------------------------------------------- the format


def test_the_example_file_parses():
    fams = load_prompts(EXAMPLE)
    assert list(fams) == ["plain", "radiologist[1]", "radiologist[2]", "ensembled"]
    assert fams["plain"] == family_from_templates("plain", "No {x}.", "{X}.")
    assert fams["plain"].prompts("Lung nodule") == (("No lung nodule.", "Lung nodule."),)
    r1, r2 = fams["radiologist[1]"], fams["radiologist[2]"]
    assert r1.prompts("Lung nodule") == (("No pulmonary nodule is seen.", "A pulmonary nodule is seen."),)  # fmt: skip
    assert r2.prompts("Lung nodule") == (("The lungs are free of nodules.", "There is a nodule in the lung."),)  # fmt: skip
    assert r1.prompts("Pleural effusion") != r2.prompts("Pleural effusion")
    # single-pair abnormalities repeat in every variant: the explicit one and the template's
    for ab in ("Cardiomegaly", "Renal cyst"):
        assert r1.prompts(ab) == r2.prompts(ab)
    assert r1.prompts("Cardiomegaly") == (("The heart is of normal size.", "The heart is enlarged."),)  # fmt: skip
    assert r1.prompts("Renal cyst") == (("The kidney shows no renal cyst.", "The kidney shows renal cyst."),)  # fmt: skip
    ens = fams["ensembled"]
    assert ens.ensemble and ens.n_pairs == 3 and len(ens.prompts("Hepatic steatosis")) == 2
    assert ens.prompts("Cardiomegaly") == (prompt_pair(ABNORMALITIES[NAMES.index("Cardiomegaly")], "fvlm"),)  # fmt: skip
    for fam in fams.values():
        assert list(fam.pairs) == NAMES
        assert fam.name not in prompt_family_names()
    assert not any(f.ensemble for n, f in fams.items() if n != "ensembled")
    d = ens.to_dict()
    assert d["ensemble"] and len(d["pairs"]["Emphysema"]) == 3 and set(d["pairs"]) == set(NAMES)


def test_builtin_families_are_the_catalog_prompts():
    fams = builtin_families()
    assert list(fams) == list(prompt_family_names())
    for name, fam in fams.items():
        assert not fam.ensemble and fam.n_pairs == 1
        for ab in ABNORMALITIES:
            assert fam.prompts(ab) == (prompt_pair(ab, name),)
    for name, (neg, pos) in PROMPT_FAMILIES.items():
        assert family_from_templates("copy", neg, pos).pairs == fams[name].pairs
    with pytest.raises(KeyError, match="unknown prompt family"):
        zero_shot.prompt_embeddings(TextModel(), "nope")


def test_the_file_ensemble_setting_and_a_family_override():
    text = """
ensemble: true
families:
  a:
    template: ["No {x}.", "{X}."]
    pairs:
      Emphysema: [["n1", "p1"], ["n2", "p2"]]
  b:
    ensemble: false
    template: ["No {x}.", "{X}."]
    pairs:
      Emphysema: [["n1", "p1"], ["n2", "p2"]]
      Atelectasis: [["m1", "q1"], ["m2", "q2"]]
"""
    fams = parse_prompts(text)
    assert list(fams) == ["a", "b[1]", "b[2]"]
    assert fams["a"].ensemble and fams["a"].prompts("Emphysema") == (("n1", "p1"), ("n2", "p2"))
    assert fams["b[2]"].prompts("Atelectasis") == (("m2", "q2"),)
    assert fams["b[2]"].prompts("Emphysema") == (("n2", "p2"),)


def test_a_family_of_pairs_alone_must_cover_every_abnormality():
    paraphrase = {"families": {"para": {"pairs": {ab.name: list(ab.paraphrase) for ab in ABNORMALITIES}}}}  # fmt: skip
    fam = parse_prompts(yaml.safe_dump(paraphrase))["para"]
    assert fam.pairs == builtin_families()["paraphrase"].pairs
    del paraphrase["families"]["para"]["pairs"]["Renal cyst"]
    del paraphrase["families"]["para"]["pairs"]["Emphysema"]
    err = _error(yaml.safe_dump(paraphrase))
    assert err.key == "families.para.pairs" and err.line == 3
    assert "missing: Emphysema, Renal cyst" in str(err)


# ----------------------------------------------------------------------------- errors


def _error(text: str) -> PromptFileError:
    with pytest.raises(PromptFileError) as info:
        parse_prompts(text, "bad.yaml")
    return info.value


T = 'template: ["No {x}.", "{X}."]'
ERRORS = [
    # (file text, line, key, words of the problem)
    (f"ensemble: false\nfamilys:\n  a:\n    {T}\n", 2, "familys", "did you mean 'families'"),
    (f"families:\n  a:\n    {T}\nextra: 1\n", 4, "extra", "unknown key 'extra'"),
    (
        'families:\n  a:\n    template: ["No {x}."]\n',
        3,
        "families.a.template",
        "list of two strings",
    ),  # fmt: skip
    (
        'families:\n  a:\n    template: "No {x}."\n',
        3,
        "families.a.template",
        "list of two strings",
    ),  # fmt: skip
    (
        'families:\n  a:\n    template: [No, "{X}."]\n',
        3,
        "families.a.template",
        "YAML bool 'No'",
    ),  # fmt: skip
    (
        'families:\n  a:\n    template:\n      - "No {x}."\n      - "{y} is present."\n',
        5,
        "families.a.template",
        "unknown placeholder {y}",
    ),  # fmt: skip
    (
        'families:\n  a:\n    template: ["No {x.", "{X}."]\n',
        3,
        "families.a.template",
        "stray brace",
    ),  # fmt: skip
    (
        'families:\n  a:\n    template: ["No {x!r}.", "{X}."]\n',
        3,
        "families.a.template",
        "format spec",
    ),  # fmt: skip
    (
        'families:\n  a:\n    template: ["", "{X}."]\n',
        3,
        "families.a.template",
        "empty string",
    ),  # fmt: skip
    (
        f'families:\n  a:\n    {T}\n    pairs:\n      Lung nodules: ["n", "p"]\n',
        5,
        "families.a.pairs.Lung nodules",
        "did you mean 'Lung nodule'",
    ),  # fmt: skip
    (
        f'families:\n  a:\n    {T}\n    pairs:\n      Lung nodule:\n        - ["n", "p"]\n        - ["n", "  "]\n',
        7,
        "families.a.pairs.Lung nodule[2]",
        "empty string",
    ),  # fmt: skip
    (
        f'families:\n  a:\n    {T}\n    pairs:\n      Lung nodule: [["n", "p"], "q"]\n',
        5,
        "families.a.pairs.Lung nodule",
        "not a mix",
    ),  # fmt: skip
    (
        f'families:\n  a:\n    {T}\n    pairs:\n      Lung nodule: ["n", "p", "q"]\n',
        5,
        "families.a.pairs.Lung nodule",
        "list of two strings",
    ),  # fmt: skip
    (
        f"families:\n  a:\n    {T}\n  b:\n    {T}\n  a:\n    {T}\n",
        6,
        "families.a",
        "twice (first at line 2)",
    ),  # fmt: skip
    (f"families:\n  fvlm:\n    {T}\n", 2, "families.fvlm", "built-in prompt family"),
    (
        f"families:\n  a:\n    {T}\n    ensembel: true\n",
        4,
        "families.a.ensembel",
        "did you mean 'ensemble'",
    ),  # fmt: skip
    (f"ensemble: maybe\nfamilies:\n  a:\n    {T}\n", 1, "ensemble", "true or false"),
    ("families:\n  a:\n    ensemble: true\n", 2, "families.a", "a template, pairs, or both"),
    ('families:\n  a: ["No {x}.", "{X}."]\n', 2, "families.a", "expected a mapping"),
    ("families: {}\n", 1, "families", "no family"),
    ("ensemble: true\n", 1, "families", "missing"),
    ("- a\n- b\n", 1, None, "expected a mapping"),
    ("", 1, None, "empty"),
    (
        f'families:\n  a:\n    {T}\n    pairs:\n      Emphysema: [["a", "b"], ["c", "d"]]\n'
        '      Atelectasis: [["a", "b"], ["c", "d"], ["e", "f"]]\n',
        6,
        "families.a.pairs.Atelectasis",
        "same number",
    ),  # fmt: skip
    (
        f'families:\n  a:\n    {T}\n  b:\n    template: ["No x}}.", "{{X}}."]\n',
        5,
        "families.b.template",
        "stray brace",
    ),  # fmt: skip
    (
        'families:\n  a:\n    template: ["No {x}.", "{X}."\n',
        4,
        None,
        "not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence at line 3)",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("text", "line", "key", "words"), ERRORS)
def test_errors_name_the_line_and_the_key(text, line, key, words):
    err = _error(text)
    message = str(err)
    assert err.line == line and err.key == key, message
    assert message.startswith(f"bad.yaml, line {line}" + (f", {key}: " if key else ": ")), message
    assert words in message, message
    assert "\n" not in message


def test_an_unknown_abnormality_without_close_match_lists_the_catalog():
    err = _error(f'families:\n  a:\n    {T}\n    pairs:\n      Brain bleed: ["n", "p"]\n')
    assert "Lung nodule" in str(err) and "Renal cyst" in str(err)


def test_load_prompts_names_the_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text('families:\n  a:\n    template: ["No {z}.", "{X}."]\n')
    with pytest.raises(PromptFileError, match=rf"^{bad}, line 3, families\.a\.template: "):
        load_prompts(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompts(tmp_path / "absent.yaml")
    assert issubclass(PromptFileError, ValueError)


def test_prompt_family_checks_its_pairs():
    pairs = {n: (("n", "p"),) for n in NAMES}
    with pytest.raises(ValueError, match="no prompts for Renal cyst"):
        PromptFamily("x", {k: v for k, v in pairs.items() if k != "Renal cyst"})
    with pytest.raises(ValueError, match="did you mean 'Lung nodule'"):
        PromptFamily("x", {**pairs, "lung nodule ": (("n", "p"),)})
    with pytest.raises(ValueError, match="two non-empty strings"):
        PromptFamily("x", {**pairs, "Emphysema": ("no", "ok")})  # one pair, not a list of pairs
    with pytest.raises(ValueError, match="unknown placeholder"):
        family_from_templates("x", "No {term}.", "{X}.")


# ----------------------------------------------------------------------------- scoring


def test_a_file_family_with_built_in_templates_scores_exactly_like_it():
    model, split, train = TextModel(), random_split(seed=0), random_split(seed=1)
    text = "families:\n" + "".join(
        f'  my_{name}:\n    template: ["{neg}", "{pos}"]\n'
        for name, (neg, pos) in PROMPT_FAMILIES.items()
    )
    paraphrase = {ab.name: list(ab.paraphrase) for ab in ABNORMALITIES}
    text += "  " + yaml.safe_dump({"my_paraphrase": {"pairs": paraphrase}}).replace("\n", "\n  ")
    mine = parse_prompts(text)
    assert list(mine) == [f"my_{n}" for n in prompt_family_names()]
    for name in prompt_family_names():
        ours = zero_shot.prompt_embeddings(model, mine[f"my_{name}"])
        theirs = zero_shot.prompt_embeddings(model, name)
        assert model.calls[-1] == model.calls[-2]  # the same texts, in the same order
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    for name in ("hlip", "paraphrase"):  # {anatomy} in a template; explicit pairs only
        ours = zero_shot.zero_shot_detection(model, split, train, family=mine[f"my_{name}"])
        theirs = zero_shot.zero_shot_detection(model, split, train, family=name)
        assert ours.family == f"my_{name}" and theirs.family == name
        for ab in NAMES:
            np.testing.assert_array_equal(ours.scores[ab][0], theirs.scores[ab][0])
        assert ours.table.equals(theirs.table)
    rob = zero_shot.prompt_robustness(model, split, [*prompt_family_names(), *mine.values()])
    assert rob["families"] == [*prompt_family_names(), *mine]
    for name in prompt_family_names():
        assert rob["macro_auc"][f"my_{name}"] == rob["macro_auc"][name]
        assert rob["per_abnormality_auc"][f"my_{name}"] == rob["per_abnormality_auc"][name]


def test_an_ensemble_averages_the_normalised_embeddings():
    model = TextModel()
    pairs = {n: (("n " + n, "p " + n),) for n in NAMES}
    pairs["Emphysema"] = (("n1", "p1"), ("n2", "p2"), ("n3", "p3"))
    fam = PromptFamily("ens", pairs, ensemble=True)
    neg, pos = zero_shot.prompt_embeddings(model, fam)
    assert len(model.calls) == 1 and len(model.calls[0]) == 2 * (len(NAMES) + 2)
    k = NAMES.index("Emphysema")
    for got, texts in ((neg, ("n1", "n2", "n3")), (pos, ("p1", "p2", "p3"))):
        want = F.normalize(torch.stack([F.normalize(_vec(t), dim=0) for t in texts]).mean(0), dim=0)
        torch.testing.assert_close(got[k], want)
        # single-pair abnormalities: the normalised embedding of their one prompt
        torch.testing.assert_close(got[0 if k else 1].norm(), torch.tensor(1.0))
    torch.testing.assert_close(neg[NAMES.index("Cardiomegaly")], F.normalize(_vec("n Cardiomegaly"), dim=0))  # fmt: skip
    split = random_split()
    rob = zero_shot.prompt_robustness(model, split, [fam])
    assert rob["families"] == ["ens"]  # an ensemble is one family
    assert zero_shot.zero_shot_detection(model, split, family=fam).family == "ens"


def test_without_ensemble_several_pairs_are_several_families():
    model, split = TextModel(), random_split()
    pairs = {n: (("n " + n, "p " + n),) for n in NAMES}
    pairs["Emphysema"] = (("n1", "p1"), ("n2", "p2"))
    fam = PromptFamily("wording", pairs)
    one, two = fam.expand()
    assert (one.name, two.name) == ("wording[1]", "wording[2]")
    assert one.prompts("Emphysema") == (("n1", "p1"),) and two.prompts("Emphysema") == (("n2", "p2"),)  # fmt: skip
    assert one.prompts("Renal cyst") == two.prompts("Renal cyst") == (("n Renal cyst", "p Renal cyst"),)  # fmt: skip
    with pytest.raises(ValueError, match="expand"):
        zero_shot.prompt_embeddings(model, fam)
    rob = zero_shot.prompt_robustness(model, split, ["fvlm", fam])
    assert rob["families"] == ["fvlm", "wording[1]", "wording[2]"]
    direct = zero_shot.prompt_robustness(model, split, [two])
    assert rob["macro_auc"]["wording[2]"] == direct["macro_auc"]["wording[2]"]
    with pytest.raises(ValueError, match="same number"):
        PromptFamily("u", {**pairs, "Atelectasis": (("a", "b"), ("c", "d"), ("e", "f"))}).expand()
    with pytest.raises(ValueError, match="keyed by name"):
        zero_shot.prompt_robustness(model, split, ["fvlm", builtin_families()["fvlm"]])


# ----------------------------------------------------------------------------- the command line


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load a model (and so a dataset) fails the test."""

    def boom(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli_evaluate, "_load", boom)


def test_cli_reports_a_malformed_prompt_file_in_one_line(tmp_path, capsys, no_model):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'families:\n  a:\n    {T}\n    pairs:\n      Cardiomegally: ["n", "p"]\n')
    assert cli_main(["evaluate", "--untrained", "--prompts", str(bad)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and not captured.out
    assert lines[0].startswith(f"cagcl-mini evaluate: error: {bad}, line 5, ")
    assert "families.a.pairs.Cardiomegally" in lines[0] and "'Cardiomegaly'" in lines[0]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--prompts", "MISSING"], "does not exist"),
        (["--prompts-only"], "--prompts-only needs --prompts"),
        (["--prompts", "EXAMPLE", "--prompts-only", "--families", "fvlm"], "--families"),
        (["--prompts", "EXAMPLE", "--family", "radiologist"], "radiologist[1]"),
        (["--family", "plain"], "unknown prompt family 'plain'"),
    ],
)
def test_cli_prompt_option_errors(argv, words, tmp_path, capsys, no_model):
    subst = {"MISSING": str(tmp_path / "none.yaml"), "EXAMPLE": str(EXAMPLE)}
    argv = [subst.get(a, a) for a in argv]
    assert cli_main(["evaluate", "--untrained", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cagcl-mini evaluate: error: ") and words in err
    assert len(err.strip().splitlines()) == 1


def test_cli_prompt_options_pick_the_families():
    parser = build_parser()

    def pick(*argv):
        args = parser.parse_args(["evaluate", "--untrained", *argv])
        family, families, from_file = cli_evaluate._prompt_families(args)
        names = [f if isinstance(f, str) else f.name for f in families]
        return (family if isinstance(family, str) else family.name), names, list(from_file)

    file_names = ["plain", "radiologist[1]", "radiologist[2]", "ensembled"]
    assert pick() == ("fvlm", list(prompt_family_names()), [])
    assert pick("--families", "hlip", "fvlm", "hlip") == ("fvlm", ["hlip", "fvlm"], [])
    assert pick("--prompts", str(EXAMPLE)) == (
        "fvlm", [*prompt_family_names(), *file_names], file_names,
    )  # fmt: skip
    assert pick("--prompts", str(EXAMPLE), "--families", "ctclip", "--family", "plain") == (
        "plain", ["ctclip", *file_names], file_names,
    )  # fmt: skip
    assert pick("--prompts", str(EXAMPLE), "--prompts-only", "--family", "radiologist[2]") == (
        "radiologist[2]", file_names, file_names,
    )  # fmt: skip
