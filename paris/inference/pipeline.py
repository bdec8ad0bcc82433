"""ParisPipeline: generate images from Python as with diffusers, from a run, a pipeline folder or the release.

    pipe = ParisPipeline.from_pretrained("paris-fashion")        # or ParisPipeline.from_run("runs/demo")
    images = pipe(["a photo of a sneaker"], strategy="top2", steps=50, guidance=7.5, seed=0)   # PIL images
    pipe.save_pretrained("paris-fashion")

A call's defaults are the pipeline's sampling settings, `pipe.sample`: the run's sample config (the one `paris
generate RUN` uses), or the one saved in config.json, so Python and the command line draw the same images.

A pipeline folder (save_pretrained) is laid out as the public Paris release, and is a diffusers repository too
(paris.inference.diffusers_pipeline):
    config.json (num_experts, latent shape, encoders, sampling settings), model_index.json + pipeline.py (diffusers)
    README.md: the Hub's model card (paris.inference.model_card)
    expert_<i>/ and router/: config.json + diffusion_pytorch_model.safetensors
    text_encoder/, tokenizer/, vae/ (when not pixel space), scheduler/
`from_pretrained` also reads a download of the public release itself, converting its networks as they load
(paris.inference.release). Weights load with strict key and shape checks, from safetensors only (never a pickle).
"""

from __future__ import annotations

import dataclasses

from paris import layout
from paris.clusters.partition import read_meta, trained_on_current
from paris.config import SampleConfig, from_dict
from paris.errors import ParisError
from paris.images import to_pil
from paris.inference import release
from paris.inference.lora_experts import load_expert
from paris.inference.mixture import ExpertPool, Mixture, retire
from paris.inference.model_card import Network, model_card
from paris.inference.sampler import generate
from paris.models.encoders import TextEncoder, build_autoencoder, build_text_encoder, check_device
from paris.models.io import load_pretrained, require_pretrained, save_pretrained
from paris.models.lora import is_lora, is_lora_folder, merged
from paris.outputs import check_apart, folder_written_whole
from paris.progress import bar
from paris.prompts import prompt_list
from paris.roster.retired import retired_experts
from paris.run import RunDir


def _require_partition(run: RunDir, job: str, partition: dict, cluster: int | None = None) -> None:
    """Refuse a model trained on other clusters than the run's partition now holds (re-partitioned, or grown:
    a router trained for fewer experts)."""
    done = f"{layout.final(job)}/manifest.json"
    if run.exists(done) and not trained_on_current(run.read_json(done), partition, cluster):
        raise ParisError(f"{run.url}/{job} was trained on other clusters than the run's partition holds now; "
                         f"{layout.next_step(job)} on the current clusters (or partition again as before)")


def _latent_shape(run: RunDir, num_experts: int) -> list[int]:
    """The shape of the latents: from the data's manifest or, where the data is not here (a distillation from
    expert samples alone), from what the experts published (paris.train.expert_samples)."""
    for shard_set in (layout.DATA, *(layout.expert_samples(k) for k in range(num_experts))):
        if run.exists(layout.manifest(shard_set)):
            return run.read_json(layout.manifest(shard_set))["latent_shape"]
    return run.read_json(layout.manifest())["latent_shape"]  # missing: the error says how to make it


# What a pipeline folder's config.json must say (and save_pretrained writes, with the sample settings).
PIPELINE_KEYS = ("num_experts", "latent_shape", "autoencoder", "latent_scale", "text_encoder", "max_tokens")
# What config.json keeps when the pipeline knows it, for the model card (paris.inference.model_card).
CARD_KEYS = ("cluster_sizes", "license")


class ParisPipeline:
    def __init__(self, mixture: Mixture, config: dict, sample: SampleConfig | None = None, source: str | None = None):
        self.mixture, self.config = mixture, config
        self.sample = sample or SampleConfig()
        self.source = source  # the folder or run its networks are read from (experts may load as they are used)

    @classmethod
    def from_run(cls, run_url: str, max_resident_experts: int | None = None, device: str = "cpu",
                 model: str | None = None, offload_experts: bool = False, expert: int | None = None,
                 router: str | None = "", quantize: str | None = None) -> "ParisPipeline":
        """The experts (experts/<k>/final) and router (router/final; with `router` NAME, router-NAME/final) of a
        training run; or with `model` one model of it alone, a job folder such as "monolith" (the baseline),
        "student" or "student-NAME" (`paris distill`); or with `expert` that expert alone. `router` None: the
        experts without a router, for the oracle rule alone (a distillation's teacher). With
        `max_resident_experts` at most that many experts stay on `device`; `offload_experts` keeps the evicted
        ones in host memory instead of reading them again from disk (paris.inference.mixture.ExpertPool).
        `quantize`: the experts' linear layers in int8 as they load (SampleConfig.quantize; None: the run's)."""
        check_device(device)
        run = RunDir(run_url)
        run_config = run.read_config()
        data, sample = run_config.data, run_config.sample.updated(quantize=quantize)
        partition = read_meta(run)
        num_experts = partition["num_clusters"]
        config = {"num_experts": num_experts, "latent_shape": _latent_shape(run, num_experts),
                  "autoencoder": data.autoencoder, "autoencoder_path": data.autoencoder_path,
                  "latent_scale": data.latent_scale, "text_encoder": data.text_encoder, "max_tokens": data.max_tokens}
        text_encoder = build_text_encoder(data.text_encoder, data.text_encoder_path, data.max_tokens, device)
        if model or expert is not None:
            folder = layout.final(model or layout.expert(expert))
            return cls._from_folders(run, [folder], None, text_encoder, {**config, "num_experts": 1}, None, device,
                                     sample)
        experts = [layout.final(layout.expert(k)) for k in range(num_experts)]
        for k in range(num_experts):
            _require_partition(run, layout.expert(k), partition, k)
        if router is not None:
            _require_partition(run, layout.router(router), partition)
        if "sizes" in partition:  # the images each expert was trained on, for the model card
            config["cluster_sizes"] = partition["sizes"]
        return cls._from_folders(run, experts, None if router is None else layout.final(layout.router(router)),
                                 text_encoder, config, max_resident_experts, device, sample, offload_experts,
                                 retired_experts(run))

    @classmethod
    def from_pretrained(cls, path: str, max_resident_experts: int | None = None, device: str = "cpu",
                        offload_experts: bool = False, timestep_map: str = "1000t",
                        quantize: str | None = None) -> "ParisPipeline":
        """A pipeline folder (written by save_pretrained), or a download of the public Paris release, whose
        networks are converted as they load (`timestep_map`: how its networks read t, see DiTConfig). The other
        arguments as in `from_run`."""
        check_device(device)
        folder = RunDir(path)
        if release.is_release(folder):
            return cls._from_release(folder, *release.components(folder, timestep_map), max_resident_experts, device,
                                     offload_experts, SampleConfig().updated(quantize=quantize))
        if not folder.exists("config.json"):
            raise ParisError(f"{path} is not a Paris pipeline folder (no config.json); write one with save_pretrained")
        config = folder.read_json("config.json")
        lacking = [key for key in PIPELINE_KEYS if key not in config]
        if lacking:
            raise ParisError(f"{path}/config.json lacks {', '.join(lacking)}; it is not a complete Paris pipeline "
                             "config (write one with save_pretrained)")
        experts = [f"expert_{k}" for k in range(config["num_experts"])]
        if not folder.exists("text_encoder"):
            raise ParisError(f"{path} lacks text_encoder/; it is not a complete Paris pipeline folder")
        router = "router" if config["num_experts"] > 1 else None
        tokenizer = folder.path("tokenizer") if folder.exists("tokenizer") else None
        text_encoder = TextEncoder.load(config["text_encoder"], folder.path("text_encoder"), config["max_tokens"],
                                        device, tokenizer)
        config = {**config, "autoencoder_path": folder.path("vae") if config["autoencoder"] != "identity" else ""}
        sample = from_dict(SampleConfig, config.get("sample", {}), f"{path}/config.json sample.").updated(
            quantize=quantize)
        return cls._from_folders(folder, experts, router, text_encoder, config, max_resident_experts, device, sample,
                                 offload_experts, config.get("retired", []))

    @classmethod
    def _from_release(cls, folder: RunDir, root: dict, found: list, max_resident: int | None, device: str,
                      offload: bool, sample: SampleConfig) -> "ParisPipeline":
        """The public release (`found`: release.components): each network converted as it loads, the experts
        when first used."""
        *experts, router = found
        loaders = [lambda expert=expert: release.load_release_model(folder, expert) for expert in experts]
        router = release.load_release_model(folder, router)
        config = release.pipeline_config(folder, root)
        text_encoder = TextEncoder.load(config["text_encoder"], config["text_encoder_path"], config["max_tokens"],
                                        device, config["tokenizer_path"])
        return cls._assemble(folder, loaders, router, text_encoder, config, max_resident, device, sample, offload)

    @classmethod
    def _from_folders(cls, root: RunDir, experts: list[str], router: str | None, text_encoder, config: dict,
                      max_resident: int | None, device: str, sample: SampleConfig, offload: bool = False,
                      removed: list[int] = ()) -> "ParisPipeline":
        """Experts and router saved by paris (config.json + safetensors) in these folders of `root`. The experts
        `removed` (paris remove-expert) are never loaded; one that is missing is retired with a warning
        (sampling goes on without it); a missing router is an error."""
        missing = [k for k, folder in enumerate(experts)
                   if k not in removed and not root.exists(f"{folder}/config.json")]
        if len(missing) + len(removed) == len(experts):  # nothing to degrade to
            require_pretrained(root, experts[missing[0]])  # the error says how to train it
        loaders = [lambda folder=folder: load_expert(root, folder) for folder in experts]
        router_model = load_pretrained(root, router) if router else None
        pipe = cls._assemble(root, loaders, router_model, text_encoder, config, max_resident, device, sample, offload)
        pipe.mixture.retired.update(removed)
        pipe.mixture.lora_experts.update(k for k, folder in enumerate(experts) if is_lora_folder(root, folder))
        for k in missing:
            retire(pipe.mixture, k, f"expert {k} is unavailable: no trained model at {root.url}/{experts[k]}")
        return pipe

    @classmethod
    def _assemble(cls, root: RunDir, loaders: list, router_model, text_encoder, config: dict,
                  max_resident: int | None, device: str, sample: SampleConfig,
                  offload: bool = False) -> "ParisPipeline":
        if len(loaders) == 1:  # one model (the monolith, a student): its only rule is top1
            sample = dataclasses.replace(sample, strategy="top1")
        if router_model is not None and router_model.architecture.num_experts != len(loaders):
            raise ParisError(f"the router of {root.url} chooses among {router_model.architecture.num_experts} experts "
                             f"but there are {len(loaders)}; retrain it or fix config.json")
        autoencoder = build_autoencoder(config["autoencoder"], config["autoencoder_path"], config["latent_scale"], device)
        router_model = router_model.to(device) if router_model is not None else None
        mixture = Mixture(ExpertPool(loaders, max_resident, device, offload), router_model, text_encoder, autoencoder,
                          tuple(config["latent_shape"]))
        mixture.experts.use_quantization(sample.quantize)  # checked now (torchao, the device): before any sampling
        return cls(mixture, config, sample, root.url)

    def save_pretrained(self, path: str) -> None:
        """A pipeline folder that ParisPipeline.from_pretrained, `paris generate` and diffusers'
        DiffusionPipeline.from_pretrained(path, trust_remote_code=True) all load, written whole or not at all
        (paris.outputs), and never over the folder the pipeline reads its experts from. Experts are written one
        at a time, so a pipeline capped at one resident expert saves in the memory of one."""
        if not RunDir(path).is_local:
            raise ParisError(f"save_pretrained writes the text encoder with transformers, which needs a local path, not {path}")
        check_apart(path, [self.source] if self.source else [], "the pipeline folder")
        with folder_written_whole(path) as temporary:
            self._write_folder(RunDir(temporary), RunDir(path).url.rsplit("/", 1)[-1])

    def _write_folder(self, out: RunDir, name: str) -> None:
        from paris.inference.diffusers_pipeline import write_repository_files  # diffusers' pipeline code: 2-3 s to import

        retired = sorted(self.mixture.retired)  # removed or unavailable: not written, and listed in config.json
        self.mixture.experts.use_quantization("none")  # the weights as trained; sample.quantize is saved with them
        experts = {}  # what the model card says of each expert written, gathered as each is loaded
        with bar("saving experts", len(self.mixture.experts), unit="experts") as progress:
            for k in range(len(self.mixture.experts)):
                if k not in retired:
                    expert = self.mixture.experts[k]
                    # A pipeline folder holds whole networks (the release's layout): a LoRA expert merged as trained.
                    expert = merged(expert) if is_lora(expert) else expert
                    save_pretrained(out, f"expert_{k}", expert)
                    experts[k] = Network.of(expert)
                progress.update(advance=1)
        router = self.mixture.router
        if router is not None:
            save_pretrained(out, "router", router)
        encoder = self.mixture.text_encoder
        encoder.model.save_pretrained(out.path("text_encoder"))
        encoder.tokenizer.save_pretrained(out.path("tokenizer"))
        vae = getattr(self.mixture.autoencoder, "vae", None)  # the SD VAE; pixel space has nothing to save
        if vae is not None:
            vae.save_pretrained(out.path("vae"))
        write_repository_files(out, len(self.mixture.experts), self.mixture.router is not None, encoder.model,
                               encoder.tokenizer, vae, self.config, self.sample, retired)
        out.write_text("README.md", model_card(name, self.config, self.sample, experts,
                                               Network.of(router) if router is not None else None, retired))
        config = {**{key: self.config[key] for key in PIPELINE_KEYS}, "sample": dataclasses.asdict(self.sample),
                  **({"retired": retired} if retired else {}),
                  **{key: self.config[key] for key in CARD_KEYS if key in self.config}}
        out.write_json("config.json", config)  # last: a folder with a config.json is complete

    def generate(self, prompts: list[str] | str, sample: SampleConfig | None = None, **options):
        """Tensors in [-1, 1] and sampling statistics, for a prompt or a list of them (paris.prompts). The sampling settings are `sample`, by default the
        pipeline's, with any of SampleConfig's fields given in `options` in their place (checked here, as a
        loaded config is); the other options are those of paris.inference.sampler.generate (negative_prompts,
        noise, generator, trace, on_step, decode)."""
        names = {f.name for f in dataclasses.fields(SampleConfig)}
        settings = {key: options.pop(key) for key in list(options) if key in names}
        sample = sample or self.sample
        return generate(self.mixture, prompt_list(prompts), sample.updated(**settings) if settings else sample,
                        **options)

    def __call__(self, prompts: list[str] | str, **options):
        """PIL images, one per prompt; `options` as in `generate`."""
        prompts = [prompts] if isinstance(prompts, str) else prompts
        images, _ = self.generate(prompts, **options)
        return [to_pil(image) for image in images]


def convert_release(src: str, out: str, timestep_map: str = "1000t") -> list:
    """Write the release at `src` as a paris pipeline folder `out` (for ParisPipeline, `paris generate` and
    diffusers), converting one expert at a time; returns what was found in each network's config and weights
    (paris.inference.release.Component)."""
    folder = RunDir(src)
    if not release.is_release(folder):
        raise ParisError(f"{src} is not a Paris release download (no config.json with expert_0/config.json beside "
                         "it); download the release with `hf download bageldotcom/paris --local-dir DIR`")
    root, found = release.components(folder, timestep_map)
    for component in found:  # every name and shape, from the headers, before anything is written
        release.load_release_model(folder, component, shapes_only=True)
    ParisPipeline._from_release(folder, root, found, max_resident=1, device="cpu", offload=False,
                                sample=SampleConfig()).save_pretrained(out)
    return found
