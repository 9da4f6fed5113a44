"""Experiment configuration: dataclasses built from layered YAML files and ``--set section.key=value``.

No global flags: everything a run depends on is in one :class:`ExperimentConfig`, saved with every
checkpoint. Its ``model`` section is the chosen model's own options class (a :class:`ModelConfig`
subclass registered with the model, holding its paper's defaults); this module does not know the
models, so :func:`build_config` takes the lookup ``model name -> options class`` as an argument
(:func:`e2e.models.load_config` passes the registry's).

Layers: defaults <- ``base:`` file(s) named by a config file (e.g. a dataset's shared settings) <- the
file <- ``--set``. Unknown keys, values of the wrong type, values outside a ``Literal`` field's choices
and values outside a field's declared range are errors naming the layer (file or ``--set``), the key,
the value and what is allowed, raised while loading. A field declares its range once, in its metadata
(:func:`bounded` and its shorthands); :func:`check_value` applies it to any dataclass section.

Files and ``--set`` values are read with :class:`ConfigLoader`: YAML 1.1 as PyYAML reads it, except
that ``1e-3`` is the float 0.001 (YAML 1.2) rather than the string "1e-3".
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # the shipped configs/ of this checkout


class UsageError(ValueError):
    """Something the user asked for cannot be done as asked (a config value, a path, an argument, the
    state of a run folder). The command line prints it as ``e2e: error: ...`` without a traceback;
    any other exception is a bug and keeps its traceback."""


class ConfigError(UsageError):
    """A config file or override names a key that does not exist, or a value of the wrong type or range."""


def resolve_config_path(path: Path) -> Path:
    """``path`` as given when it exists, else a relative path taken from the project root (the folder
    holding ``configs/``), so ``configs/demo/mesm.yaml`` works from any directory."""
    if path.exists() or path.is_absolute():
        return path
    from_repo = REPO_CONFIGS.parent / path
    return from_repo if from_repo.exists() else path


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also resolves exponent floats without a dot or exponent sign (``1e-3``, ``5E4``)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def parse_yaml(text: str, source: str) -> Any:
    """``text`` parsed with :class:`ConfigLoader`; a syntax error names ``source`` and its line."""
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where} ({getattr(error, 'problem', None) or error})") from None


@dataclass(frozen=True)
class Bounds:
    """The numbers a field accepts: ``low <= value`` (``low < value`` when ``low_open``) and ``value <= high``."""

    low: float
    high: float | None = None
    low_open: bool = False

    def admits(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}]"


def bounded(default: float, low: float, high: float | None = None, low_open: bool = False):
    """A dataclass field whose values must lie within :class:`Bounds` ``(low, high, low_open)``."""
    return field(default=default, metadata={"bounds": Bounds(low, high, low_open)})


def positive(default: float):
    return bounded(default, 0, low_open=True)


def non_negative(default: float):
    return bounded(default, 0)


def fraction(default: float):
    """A rate or probability, in [0, 1]."""
    return bounded(default, 0, 1)


# the corpora that label each data.task; sentiment and vad are regression tasks (no classes, no thresholds)
TASK_DATASETS = {
    "emotion": ("iemocap", "mosei", "iemocap4"),
    "sentiment": ("mosei", "mosi", "sims"),
    "vad": ("iemocap",),
}
REGRESSION_TASKS = ("sentiment", "vad")

Modalities = Literal["t", "a", "v", "ta", "tv", "av", "tav"]  # text, audio, visual, in this order
MODALITIES = "tav"


def parse_modalities(spec: str) -> tuple[str, ...]:
    """``"tav"``, ``"ta"``, ... -> the modalities in canonical order; rejects unknown or repeated letters."""
    if not spec or set(spec) - set(MODALITIES) or len(set(spec)) != len(spec):
        raise UsageError(f"modalities must be a non-empty subset of {MODALITIES!r} without repeats, got {spec!r}")
    return tuple(m for m in MODALITIES if m in spec)


# data.source: where a run's utterances come from. clips: the corpus in data.data_dir (data-reorg, then
# e2e preprocess / features); mmsa:PATH / mult:PATH: a standard feature file (e2e.data.benchmark_files)
SOURCE_CLIPS = "clips"
SOURCE_DATASETS = {
    SOURCE_CLIPS: ("iemocap", "mosei"),
    "mmsa": ("mosi", "mosei", "sims"),  # MMSA's aligned_50.pkl / unaligned_50.pkl, sentiment
    "mult": ("iemocap4", "mosei", "mosi"),  # MulT's iemocap_data.pkl (4 emotions), mosei_senti / mosi_data.pkl
}


def parse_source(source: str) -> tuple[str, Path] | None:
    """``data.source`` -> None for ``clips``, else ``(kind, path)`` of ``mmsa:PATH`` / ``mult:PATH``;
    ConfigError for any other spelling."""
    if source == SOURCE_CLIPS:
        return None
    kind, sep, path = source.partition(":")
    if not sep or kind not in SOURCE_DATASETS or kind == SOURCE_CLIPS or not path:
        raise ConfigError(f"data.source must be 'clips', 'mmsa:PATH' or 'mult:PATH', got {source!r}")
    return kind, Path(path).expanduser()


def format_input_dims(dims: dict[str, int]) -> str:
    """``{"t": 768, "a": 74, "v": 35}`` -> ``"t=768,a=74,v=35"`` (the spelling of ``model.input_dims``)."""
    return ",".join(f"{modality}={dims[modality]}" for modality in MODALITIES)


_INPUT_DIMS = re.compile(r"t=([1-9][0-9]*),a=([1-9][0-9]*),v=([1-9][0-9]*)")


def parse_input_dims(spec: str) -> dict[str, int]:
    """``"t=768,a=74,v=35"`` -> the feature size per modality; ConfigError for any other spelling."""
    match = _INPUT_DIMS.fullmatch(spec)
    if match is None:
        raise ConfigError(f"model.input_dims must look like 't=768,a=74,v=35' (positive sizes), got {spec!r}")
    return dict(zip(MODALITIES, map(int, match.groups())))


@dataclass
class DataConfig:
    data_dir: str = ""
    # iemocap: single-label, 6 classes; mosei: multi-label; from a feature file only (data.source): mosi,
    # sims (CH-SIMS) and iemocap4 (MulT's IEMOCAP: four one-vs-rest emotions)
    dataset: Literal["iemocap", "mosei", "mosi", "sims", "iemocap4"] = "iemocap"
    source: str = SOURCE_CLIPS  # clips | mmsa:PATH | mult:PATH (see SOURCE_DATASETS)
    # emotion: the six classes (both corpora); sentiment: MOSEI's score in [-3, 3] (regression);
    # vad: IEMOCAP's valence / activation / dominance (regression)
    task: Literal["emotion", "sentiment", "vad"] = "emotion"
    img_interval_ms: int = positive(500)  # one face crop every img_interval_ms, from the clip start
    audio_features: Literal["log_mel", "power"] = "log_mel"  # power = the official code's raw mel power
    max_frames: int = non_negative(0)  # 0 = keep all sampled frames of an utterance
    max_chunks: int = non_negative(0)  # 0 = keep all 400 ms mel chunks
    batch_size: int = positive(8)
    num_workers: int = non_negative(0)
    # foundation encoders (model.visual_encoder): the face crop size preprocessing cached (`e2e preprocess
    # --face-size`, cache/i<ms>-f<size>); 48 = the paper's crops (cache/i<ms>), the only size VGG takes
    face_size: int = positive(48)
    # evaluation protocols (e2e.data.protocols): standard = the manifest's splits; session-cv = IEMOCAP
    # leave-one-session-out, test = session `fold` (1-5), valid = a fixed slice of the other sessions;
    # label_space shared = the emotions IEMOCAP and MOSEI share (cross-corpus), native = the corpus's own
    split: Literal["standard", "session-cv"] = "standard"
    fold: int = bounded(0, 0, 5)  # 0 with split=standard
    label_space: Literal["native", "shared"] = "native"


@dataclass
class ModelConfig:
    """What every model has. Each model declares a subclass with its paper's defaults (its options)."""

    name: str = "fe2e"
    modalities: Modalities = "tav"
    text_model: str = "albert-base-v2"  # HF id or local folder; "minilm" = the offline MiniLM package
    text_max_length: int = positive(100)
    dropout: float = fraction(0.1)
    # feature models on a data.source file: its feature sizes, "t=768,a=74,v=35", recorded when the
    # config loads; "" = the sizes of our cached features. With feature encoders: those of their cache.
    input_dims: str = ""
    # feature models on clips: HF speech / vision encoders (id, folder or tiny-*) whose features replace
    # the librosa audio / O-Net visual substitutes (`e2e features --audio-encoder/--visual-encoder`); "" = those
    feature_audio_encoder: str = ""
    feature_visual_encoder: str = ""


@dataclass
class TrainConfig:
    epochs: int = positive(40)
    lr: float = non_negative(5e-5)
    text_lr_factor: float = non_negative(0.1)  # text encoder (and text head) lr = lr * text_lr_factor
    weight_decay: float = non_negative(0.0)
    scheduler: Literal["none", "cosine"] = "none"
    grad_clip: float = non_negative(0.0)  # 0 = no clipping
    early_stop_patience: int = non_negative(6)  # 0 = never stop early
    seed: int = bounded(0, 0, 2**32 - 1)  # numpy's seed range
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = True  # autocast to bfloat16 on CUDA only
    progress: bool = True  # progress bars and one line per epoch on stderr
    keep_last: bool = True  # false: delete checkpoints/last.pt once the run finishes (best.pt stays)
    # fine-tuning: before the first epoch of a fresh run, copy the parameters whose names start with
    # init_prefix from this checkpoint (e.g. ConKI's adapters pretrained on the other corpus)
    init_checkpoint: str = ""
    init_prefix: str = ""


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ModelOptions = Callable[[str], type[ModelConfig]]  # model name -> its options class; ConfigError if unknown
Layer = tuple[Any, str]  # (values {section: {key: value}}, where they came from)
SECTIONS = ("data", "model", "train")
_FIXED_SECTIONS = {"data": DataConfig, "train": TrainConfig}


def build_config(layers: Sequence[Layer], model_options: ModelOptions) -> ExperimentConfig:
    """One config from ``layers``, later layers overriding earlier ones key by key.

    Every value of every layer is checked against the field of the *final* model's options (so ``--set
    model.name=...`` may change the model, and a bad value in a base file is reported even where a
    later layer overrides it), naming the layer it came from."""
    merged = _merge(layers)
    names = merged["model"].get("name", [(ModelConfig.name, "defaults")])
    sections = {"model": _model_section(*names[-1], model_options)}
    sections.update({section: cls() for section, cls in _FIXED_SECTIONS.items()})
    for section_name, values in merged.items():
        section = sections[section_name]
        for key, layered in values.items():
            checked = [check_value(section, section_name, key, value, source) for value, source in layered]
            setattr(section, key, checked[-1])
    _check_task(sections["data"], merged["data"])
    _check_source(sections["data"], sections["model"], merged)
    return ExperimentConfig(**sections)


def _check_task(data: DataConfig, layered: dict[str, list[tuple[Any, str]]]) -> None:
    """ConfigError naming both values (and where they were set) when ``data.task`` does not exist for
    ``data.dataset``."""
    if data.dataset in TASK_DATASETS[data.task]:
        return
    where = "; ".join(
        f"data.{key} from {layered[key][-1][1] if key in layered else 'defaults'}" for key in ("task", "dataset")
    )
    raise ConfigError(
        f"data.task={data.task!r} does not exist for data.dataset={data.dataset!r} ({where}): "
        + ", ".join(f"{task} is labelled on {'/'.join(datasets)}" for task, datasets in TASK_DATASETS.items())
    )


def _check_source(data: DataConfig, model: ModelConfig, layered: dict[str, dict[str, list[tuple[Any, str]]]]) -> None:
    """ConfigError naming where ``data.source`` was set when it is misspelt, does not hold
    ``data.dataset``, or ``model.input_dims`` is misspelt or set for ``clips``."""
    where = "; ".join(
        f"{section}.{key} from {layered[section][key][-1][1]}"
        for section, key in (("data", "source"), ("data", "dataset"), ("model", "input_dims"))
        if key in layered[section]
    )
    where = f" ({where})" if where else ""
    try:
        file = parse_source(data.source)
        if model.input_dims:
            parse_input_dims(model.input_dims)
    except ConfigError as error:
        raise ConfigError(f"{error}{where}") from None
    encoders = model.feature_audio_encoder or model.feature_visual_encoder
    if file is None and model.input_dims and not encoders:
        raise ConfigError(
            f"model.input_dims={model.input_dims!r} is only for data.source files (or the encoder features of "
            f"model.feature_audio_encoder / feature_visual_encoder); the cached features of data.source=clips "
            f"have their own sizes{where}"
        )
    if file is not None and encoders:
        raise ConfigError(
            f"model.feature_audio_encoder / feature_visual_encoder extract features from clips; "
            f"data.source={data.source} holds its own features{where}"
        )
    kind = SOURCE_CLIPS if file is None else file[0]
    if data.dataset in SOURCE_DATASETS[kind]:
        return
    if file is None:
        kinds = [f"{kind}:PATH" for kind, datasets in SOURCE_DATASETS.items() if data.dataset in datasets]
        raise ConfigError(
            f"data.dataset={data.dataset!r} has no clips; it is read from a feature file, "
            f"data.source={' or '.join(kinds)}{where}"
        )
    raise ConfigError(
        f"data.source={data.source} holds data.dataset {_either(SOURCE_DATASETS[kind])}, not {data.dataset!r}{where}"
    )


def _either(names: Sequence[str]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


def load_config(path: str | Path | None, overrides: Sequence[str], model_options: ModelOptions) -> ExperimentConfig:
    """``path`` (YAML with sections data/model/train, layered over its ``base:`` files) then overrides."""
    layers = read_layers(Path(path)) if path else []
    return build_config([*layers, *(parse_override(override) for override in overrides)], model_options)


def read_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[Layer]:
    """``path``'s values, preceded by the layers of the file(s) its ``base:`` key names (relative to it)."""
    resolved = path.resolve()
    if resolved in seen:
        raise ConfigError(f"{path}: base files form a cycle ({' -> '.join(map(str, (*seen, resolved)))})")
    values = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(values, dict):
        return [(values, str(path))]
    bases = values.pop("base", [])
    layers: list[Layer] = []
    for base in [bases] if isinstance(bases, str) else bases:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base must be a file name or a list of them, got {bases!r}")
        layers += read_layers(path.parent / base, (*seen, resolved))
    return [*layers, (values, str(path))]


def parse_override(override: str) -> Layer:
    """``section.key=value`` -> a layer holding that one value (parsed as YAML)."""
    dotted, sep, raw = override.partition("=")
    section_name, dot, key = dotted.strip().partition(".")
    if not sep or not dot:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    source = f"--set {override}"
    return {section_name: {key.strip(): parse_yaml(raw, source)}}, source


def check_value(section: Any, section_name: str, key: str, value: Any, source: str) -> Any:
    """``value`` for field ``key`` of the dataclass ``section``: one of a ``Literal`` field's choices, or
    of the field's annotated type (an int is accepted for a float field and becomes a float; a bool is
    never a number) and within the field's :class:`Bounds` if it declares them. Raises ConfigError
    naming ``source`` and the key."""
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        raise ConfigError(
            f"{source}: unknown config key {section_name}.{key!r}; known keys: {', '.join(sorted(fields))}"
        )
    annotation = typing.get_type_hints(type(section))[key]
    if typing.get_origin(annotation) is Literal:
        return _check_choice(typing.get_args(annotation), f"{source}: {section_name}.{key}", value)
    allowed = _annotated_types(annotation)
    if type(value) is int and float in allowed and int not in allowed:
        value = float(value)
    if type(value) not in allowed:
        expected = (
            "true or false"
            if allowed == (bool,)
            else " or ".join("None" if kind is type(None) else kind.__name__ for kind in allowed)
        )
        raise ConfigError(f"{source}: {section_name}.{key} must be {expected}, got {value!r}")
    bounds = fields[key].metadata.get("bounds")
    if bounds is not None and value is not None and not bounds.admits(value):
        raise ConfigError(f"{source}: {section_name}.{key} must be {bounds}, got {value!r}")
    return value


def _check_choice(choices: tuple, what: str, value: Any) -> Any:
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        raise ConfigError(f"{what} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def _merge(layers: Sequence[Layer]) -> dict[str, dict[str, list[tuple[Any, str]]]]:
    """Per section and key, every ``(value, source)`` the layers give, in layer order."""
    merged: dict[str, dict[str, list[tuple[Any, str]]]] = {section: {} for section in SECTIONS}
    for values, source in layers:
        if not isinstance(values or {}, dict):
            raise ConfigError(f"{source}: must be a mapping of sections (data, model, train), got {values!r}")
        for section_name, section_values in (values or {}).items():
            if section_name not in SECTIONS:
                raise ConfigError(
                    f"{source}: unknown config section {section_name!r}; known sections: {', '.join(SECTIONS)}"
                )
            if not isinstance(section_values, dict):
                raise ConfigError(f"{source}: section {section_name!r} must be a mapping")
            for key, value in section_values.items():
                merged[section_name].setdefault(key, []).append((value, source))
    return merged


def _model_section(name: Any, source: str, model_options: ModelOptions) -> ModelConfig:
    try:
        options = model_options(name) if isinstance(name, str) else None
    except ConfigError as error:
        raise ConfigError(f"{source}: model.name: {error}") from None
    if options is None:
        raise ConfigError(f"{source}: model.name must be str, got {name!r}")
    return options()


def _annotated_types(annotation: Any) -> tuple[type, ...]:
    """The types an annotation admits: ``(str, NoneType)`` for ``str | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)
