"""Prompt families from the user: templates and explicit per-abnormality prompt pairs, from YAML.

A prompt family gives every catalog abnormality one or more (negative, positive) prompt pairs; a
zero-shot score compares a volume's anatomy embedding with the two prompts
(:mod:`cagcl_mini.evaluation.zero_shot`). The built-in families (``anatomy.PROMPT_FAMILIES`` and
the paraphrases) are :class:`PromptFamily` objects too (:func:`builtin_families`), so a family read
from a file goes wherever a built-in family name goes: ``zero_shot.prompt_embeddings``,
``zero_shot_detection``, ``prompt_robustness``, ``evaluate.evaluate_model`` and
``cagcl-mini evaluate --prompts FILE.yaml``.

The file (``examples/prompts.yaml`` is a commented example)::

    ensemble: false                 # optional (default false): what several pairs of one
                                    # abnormality mean, see below; a family may override it
    families:                       # required: family name -> family
      plain:
        template: ["No {x}.", "{X}."]            # [negative, positive]
      radiologist:
        template: ["The {anatomy} shows no {x}.", "The {anatomy} shows {x}."]
        pairs:                                   # optional; overrides the template
          Lung nodule:                           # a list of pairs ...
            - ["No pulmonary nodule is seen.", "A pulmonary nodule is seen."]
            - ["The lungs are free of nodules.", "There is a nodule in the lung."]
          Cardiomegaly: ["The heart is of normal size.", "The heart is enlarged."]  # ... or one
      voted:
        ensemble: true
        template: ["No {x}.", "{X}."]
        pairs:
          Emphysema:
            - ["No emphysema.", "Emphysema."]
            - ["The lungs show no emphysema.", "The lungs show emphysema."]

- ``template``: two strings with the placeholders ``{x}`` (the abnormality's lower-case term),
  ``{X}`` (the term capitalised) and ``{anatomy}``; ``{{`` and ``}}`` write literal braces. They
  are filled in exactly as ``anatomy.prompt_pair`` fills the built-in templates, so a template
  that copies a built-in family gives that family's prompts and scores.
- ``pairs``: catalog abnormality name (``anatomy.ALL_LABELS``) -> one pair or a list of pairs,
  used verbatim (no placeholders). A family without a template must give pairs for every
  abnormality.
- ``ensemble: false``: a family with several pairs for an abnormality becomes one family per pair
  index, ``radiologist[1]``, ``radiologist[2]``, ...; abnormalities with a single pair (the
  template's, say) repeat it in each, the others must all have the same number of pairs. The
  robustness table then shows how much the wording alone moves the AUC.
- ``ensemble: true``: one family; for each abnormality the embeddings of its pairs are averaged,
  the mean of the L2-normalised negative embeddings, re-normalised, and the same for the
  positives (CLIP's prompt ensembling).
- Family names must differ from the built-in ones (results are keyed by family name).
- YAML quoting: quote a string that starts with ``{`` or ``[``, or holds ``": "`` or ``" #"``;
  a bare ``No``, ``yes``, ``off``, ``null`` or a number is not a string to YAML, and is refused.

A malformed file raises :class:`PromptFileError`, whose message reads
``FILE, line N, KEY: problem`` (``N`` counts from 1; ``KEY`` is the dotted path of the entry at
fault, such as ``families.radiologist.pairs.Lung nodule[2]``), so the command line can print that
one line.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from cagcl_mini.anatomy import (
    ABNORMALITIES,
    ABNORMALITY_BY_NAME,
    Abnormality,
    prompt_family_names,
    prompt_pair,
)

Pair = tuple[str, str]
PLACEHOLDERS: tuple[str, ...] = ("x", "X", "anatomy")
TOP_KEYS: tuple[str, ...] = ("ensemble", "families")
FAMILY_KEYS: tuple[str, ...] = ("template", "pairs", "ensemble")
_NAMES: tuple[str, ...] = tuple(ab.name for ab in ABNORMALITIES)
_STR_TAG = "tag:yaml.org,2002:str"
_BOOL_TAG = "tag:yaml.org,2002:bool"


class PromptFileError(ValueError):
    """A malformed prompt file; ``path``, ``line`` (1-based), ``key`` and ``problem`` say where
    and what, and ``str()`` is the one line the command line prints."""

    def __init__(self, path: str | Path, line: int, key: str | None, problem: str):
        self.path, self.line, self.key, self.problem = str(path), line, key, problem
        where = f"{path}, line {line}" + (f", {key}" if key else "")
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class PromptFamily:
    """A named set of prompts: ``pairs`` maps every catalog abnormality name to one or more
    (negative, positive) pairs; with ``ensemble`` their embeddings are averaged, else a family
    with several pairs must be :meth:`expand`-ed into single-pair families before scoring."""

    name: str
    pairs: Mapping[str, tuple[Pair, ...]] = field(hash=False, repr=False)
    ensemble: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a prompt family needs a non-empty name, got {self.name!r}")
        given = dict(self.pairs)
        unknown = [n for n in given if n not in ABNORMALITY_BY_NAME]
        if unknown:
            raise ValueError(f"prompt family {self.name!r}: {unknown_abnormality(str(unknown[0]))}")
        missing = [n for n in _NAMES if n not in given]
        if missing:
            raise ValueError(f"prompt family {self.name!r} has no prompts for {', '.join(missing)}")
        clean = {}
        for name in _NAMES:
            pairs = tuple(given[name])
            if not pairs:
                raise ValueError(f"prompt family {self.name!r}: {name} has no prompt pair")
            for pair in pairs:
                if (
                    isinstance(pair, str)
                    or len(pair) != 2
                    or not all(isinstance(p, str) and p.strip() for p in pair)
                ):
                    raise ValueError(
                        f"prompt family {self.name!r}: {name}: a prompt pair is two non-empty "
                        f"strings (negative, positive), got {pair!r}"
                    )
            clean[name] = tuple((str(neg), str(pos)) for neg, pos in pairs)
        object.__setattr__(self, "pairs", clean)
        object.__setattr__(self, "ensemble", bool(self.ensemble))

    def prompts(self, abnormality: str | Abnormality) -> tuple[Pair, ...]:
        """The (negative, positive) pairs of one abnormality (by name or catalog entry)."""
        name = abnormality.name if isinstance(abnormality, Abnormality) else abnormality
        return self.pairs[name]

    @property
    def n_pairs(self) -> int:
        """The largest number of pairs any abnormality has (1 for a plain family)."""
        return max(len(p) for p in self.pairs.values())

    def expand(self) -> tuple[PromptFamily, ...]:
        """Itself when it is an ensemble or has one pair per abnormality; else one family per
        pair index, ``NAME[1]``, ``NAME[2]``, ..., where single-pair abnormalities repeat their
        pair, so each family measures one wording."""
        n = self.n_pairs
        if self.ensemble or n == 1:
            return (self,)
        uneven = {k: len(p) for k, p in self.pairs.items() if len(p) not in (1, n)}
        if uneven:
            raise ValueError(
                f"prompt family {self.name!r}: without ensemble, abnormalities have one pair or "
                f"all the same number ({n}); {', '.join(f'{k} has {v}' for k, v in uneven.items())}"
            )
        return tuple(
            PromptFamily(
                f"{self.name}[{i + 1}]",
                {k: (p[i] if len(p) > 1 else p[0],) for k, p in self.pairs.items()},
            )
            for i in range(n)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``name``, ``ensemble`` and ``pairs`` {abnormality: [[neg, pos], ...]}."""
        return {
            "name": self.name,
            "ensemble": self.ensemble,
            "pairs": {k: [list(p) for p in v] for k, v in self.pairs.items()},
        }


def builtin_family(name: str) -> PromptFamily:
    """A built-in family as a :class:`PromptFamily` (``anatomy.prompt_pair``'s prompts); a
    KeyError lists the names for an unknown one."""
    return PromptFamily(name, {ab.name: (prompt_pair(ab, name),) for ab in ABNORMALITIES})


def builtin_families() -> dict[str, PromptFamily]:
    """Every built-in family, in ``anatomy.prompt_family_names()`` order."""
    return {name: builtin_family(name) for name in prompt_family_names()}


def as_family(family: str | PromptFamily) -> PromptFamily:
    """A :class:`PromptFamily` as it is, a name as the built-in family of that name."""
    return family if isinstance(family, PromptFamily) else builtin_family(family)


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot be filled in (unknown placeholder, stray brace), or None."""
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template)]
    except ValueError:
        return "a stray brace '{' or '}' (write {{ and }} for literal braces)"
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    for f, spec, conv in fields:
        if f is None:
            continue
        if f not in PLACEHOLDERS:
            return f"unknown placeholder {{{f}}}; templates know {known}"
        if spec or conv:
            return f"placeholder {{{f}}} takes no format spec or conversion"
    return None


def fill_template(template: str, abnormality: Abnormality) -> str:
    """``template`` with ``{x}``, ``{X}`` and ``{anatomy}`` of ``abnormality`` filled in, exactly
    as ``anatomy.prompt_pair`` fills the built-in templates."""
    term = abnormality.term
    return template.format(x=term, X=term[:1].upper() + term[1:], anatomy=abnormality.anatomy)


def family_from_templates(
    name: str, negative: str, positive: str, ensemble: bool = False
) -> PromptFamily:
    """The family whose prompts are the two templates filled in for every abnormality; a
    ValueError names an unknown placeholder."""
    for which, t in (("negative", negative), ("positive", positive)):
        problem = template_problem(t) if isinstance(t, str) and t.strip() else "empty"
        if problem:
            raise ValueError(f"prompt family {name!r}, {which} template {t!r}: {problem}")
    pairs = {
        ab.name: ((fill_template(negative, ab), fill_template(positive, ab)),)
        for ab in ABNORMALITIES
    }
    return PromptFamily(name, pairs, ensemble)


def unknown_abnormality(name: str) -> str:
    """The message for an abnormality name the catalog lacks, with the close matches."""
    folded = [n for n in _NAMES if n.lower() == name.strip().lower()]
    close = list(dict.fromkeys(folded + difflib.get_close_matches(name, _NAMES, n=3, cutoff=0.5)))
    if close:
        return f"unknown abnormality {name!r}; did you mean {' or '.join(map(repr, close))}?"
    return f"unknown abnormality {name!r}; the catalog has {', '.join(_NAMES)}"


# ----------------------------------------------------------------------------- the YAML reader


class _Reader:
    """Walks the composed YAML node tree, so every error knows its line."""

    def __init__(self, path: str | Path):
        self.path = path

    def fail(self, node: yaml.Node, key: str | None, problem: str) -> PromptFileError:
        return PromptFileError(self.path, node.start_mark.line + 1, key, problem)

    def mapping(
        self, node: yaml.Node, key: str | None, what: str
    ) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """(key, key node, value node) of a mapping with string keys, no key twice."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key, f"expected {what}, got {_describe(node)}")
        out, seen = [], {}
        for knode, vnode in node.value:
            name = self.string(knode, key, "a name")
            if name in seen:
                raise self.fail(
                    knode, _join(key, name), f"{name!r} appears twice (first at line {seen[name]})"
                )
            seen[name] = knode.start_mark.line + 1
            out.append((name, knode, vnode))
        return out

    def string(self, node: yaml.Node, key: str | None, what: str = "a string") -> str:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG):
            raise self.fail(node, key, f"expected {what}, got {_describe(node)}")
        if not node.value.strip():
            raise self.fail(node, key, f"expected {what}, got an empty string")
        return node.value

    def boolean(self, node: yaml.Node, key: str) -> bool:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _BOOL_TAG):
            raise self.fail(node, key, f"expected true or false, got {_describe(node)}")
        return SafeConstructor.bool_values[node.value.lower()]

    def pair(self, node: yaml.Node, key: str, item: str) -> list[tuple[str, yaml.Node]]:
        """The two (string, node) items of a [negative, positive] list of ``item`` strings."""
        if not (isinstance(node, yaml.SequenceNode) and len(node.value) == 2):
            raise self.fail(
                node, key, "expected a list of two strings [negative, positive], got "
                f"{_describe(node)}"
            )  # fmt: skip
        return [(self.string(n, key, f"the {side} {item}"), n)
                for side, n in zip(("negative", "positive"), node.value, strict=True)]  # fmt: skip

    def template(self, node: yaml.Node, key: str) -> Pair:
        out = []
        for text, n in self.pair(node, key, "template"):
            problem = template_problem(text)
            if problem:
                raise self.fail(n, key, f"template {text!r}: {problem}")
            out.append(text)
        return out[0], out[1]

    def pairs(self, node: yaml.Node, key: str) -> tuple[Pair, ...]:
        """One [negative, positive] pair, or a list of them."""
        items = node.value if isinstance(node, yaml.SequenceNode) else None
        if items and all(isinstance(n, yaml.SequenceNode) for n in items):
            out = []
            for i, n in enumerate(items):
                (neg, _), (pos, _) = self.pair(n, f"{key}[{i + 1}]", "prompt")
                out.append((neg, pos))
            return tuple(out)
        if items is not None and any(isinstance(n, yaml.SequenceNode) for n in items):
            raise self.fail(
                node, key, "expected one pair [negative, positive] or a list of such pairs, "
                "not a mix of strings and lists"
            )  # fmt: skip
        (neg, _), (pos, _) = self.pair(node, key, "prompt")
        return ((neg, pos),)

    def family(self, name: str, knode: yaml.Node, node: yaml.Node, ensemble: bool) -> PromptFamily:
        key = f"families.{name}"
        if name in prompt_family_names():
            raise self.fail(
                knode, key, f"{name!r} is a built-in prompt family; give yours another name"
            )
        entries = self.mapping(node, key, "a mapping with template and/or pairs")
        template, explicit, pairs_node = None, {}, None
        for k, kn, vn in entries:
            sub = f"{key}.{k}"
            if k == "template":
                template = self.template(vn, sub)
            elif k == "ensemble":
                ensemble = self.boolean(vn, sub)
            elif k == "pairs":
                pairs_node = kn
                for ab, abn, pn in self.mapping(vn, sub, "a mapping: abnormality -> pairs"):
                    if ab not in ABNORMALITY_BY_NAME:
                        raise self.fail(abn, f"{sub}.{ab}", unknown_abnormality(ab))
                    explicit[ab] = (self.pairs(pn, f"{sub}.{ab}"), abn)
            else:
                raise self.fail(kn, sub, _unknown_key(k, FAMILY_KEYS))
        if template is None and pairs_node is None:
            raise self.fail(knode, key, "a family needs a template, pairs, or both")
        if template is None:
            missing = [n for n in _NAMES if n not in explicit]
            if missing:
                raise self.fail(
                    pairs_node, f"{key}.pairs", "without a template, pairs must cover every "
                    f"abnormality; missing: {', '.join(missing)}"
                )  # fmt: skip
        if not ensemble:
            counts = {ab: len(p) for ab, (p, _) in explicit.items() if len(p) > 1}
            first = next(iter(counts), None)
            for ab, n in counts.items():
                if n != counts[first]:
                    raise self.fail(
                        explicit[ab][1], f"{key}.pairs.{ab}", f"{n} pairs, but {first} has "
                        f"{counts[first]}; without ensemble, pair i of every abnormality makes "
                        f"the family {name}[i], so all need the same number (or just one)"
                    )  # fmt: skip
        pairs = {}
        for ab in ABNORMALITIES:
            if ab.name in explicit:
                pairs[ab.name] = explicit[ab.name][0]
            else:
                assert template is not None  # checked above: pairs cover every abnormality
                pairs[ab.name] = ((fill_template(template[0], ab), fill_template(template[1], ab)),)
        return PromptFamily(name, pairs, ensemble)

    def document(self, root: yaml.Node | None) -> dict[str, PromptFamily]:
        if root is None:
            raise PromptFileError(self.path, 1, None, "the file is empty; it needs 'families:'")
        ensemble, families = False, None
        for k, kn, vn in self.mapping(root, None, "a mapping with the key 'families'"):
            if k == "ensemble":
                ensemble = self.boolean(vn, k)
            elif k == "families":
                families = (kn, vn)
            else:
                raise self.fail(kn, k, _unknown_key(k, TOP_KEYS))
        if families is None:
            raise self.fail(root, "families", "missing: the file needs 'families:'")
        kn, vn = families
        entries = self.mapping(vn, "families", "a mapping: family name -> family")
        if not entries:
            raise self.fail(kn, "families", "no family given")
        out: dict[str, PromptFamily] = {}
        for name, fkn, fvn in entries:
            for fam in self.family(name, fkn, fvn, ensemble).expand():
                if fam.name in out:
                    raise self.fail(
                        fkn, f"families.{name}", f"family {fam.name!r} is defined twice (the "
                        "variants of a family with several pairs are named NAME[1], NAME[2], ...)"
                    )  # fmt: skip
                out[fam.name] = fam
        return out


def _join(key: str | None, name: str) -> str:
    return name if key is None else f"{key}.{name}"


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return f"a list of {len(node.value)}"
    kind = node.tag.rsplit(":", 1)[-1]
    if kind == "str":
        return f"the string {node.value!r}"
    if kind == "null":
        return "nothing (null)"
    return f"the YAML {kind} {node.value!r} (quote it to make it a string)"


def _unknown_key(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r}; {hint}the keys here are {', '.join(known)}"


def parse_prompts(text: str, path: str | Path = "<prompts>") -> dict[str, PromptFamily]:
    """:func:`load_prompts` of YAML text; ``path`` only names it in errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = f"not valid YAML: {exc.problem}"
        if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise PromptFileError(path, line, None, problem) from None
    except yaml.YAMLError as exc:
        raise PromptFileError(path, 1, None, f"not valid YAML: {exc}") from None
    return _Reader(path).document(root)


def load_prompts(path: str | Path) -> dict[str, PromptFamily]:
    """The families of a prompt file (format in the module docstring), by name, in file order,
    a non-ensemble family with several pairs already expanded into ``NAME[i]``; a malformed file
    raises :class:`PromptFileError`, a missing one FileNotFoundError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    return parse_prompts(path.read_text(encoding="utf-8"), path)
