"""What a CLIP Lab Space is made of: the bundle's files, its generated README front matter,
requirements.txt and .gitattributes, for each Space hardware (scripts/deploy_space.py pushes it).

The versions below were chosen from the Hub docs (huggingface/hub-docs, docs/hub/, read at
commit 242f4a1, 2026-08-22); each choice names the doc line behind it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What the Space runs. Everything else in the repository (tests/, benchmarks/, docs/, scripts/,
# runs/, .git, caches) stays out.
BUNDLE_PATHS = ("app.py", "LICENSE", "core", "demo", "assets")
EXCLUDED_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints", ".git", "runs", "tests",
                 "benchmarks", "screenshots", ".benchmarks"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".log", ".tmp")
EXCLUDED_NAMES = {".DS_Store", "Thumbs.db"}

LFS_SIZE = 10 * 1024 * 1024  # the Hub refuses plain-git files over 10 MB (spaces docs, "repositories-getting-started")

# The Hub models each Space preloads at build time, with only the files core.model._download reads
# (config, tokenizer, preprocessor, safetensors). spaces-config-reference.md, `preload_from_hub`:
# "The format for each item is "repository_name" ... or "repository_name file1,file2" for
# downloading specific files"; "Files are saved in the default huggingface_hub disk cache
# ~/.cache/huggingface/hub", which is where core.model's snapshot_download looks.
# B/32 and SigLIP 2 B/16 (a sigmoid-trained family): SigLIP 2 ships tokenizer.json, needs no SentencePiece
# file, and its 1.4 GB stays under the 2,048 MB model limit (docs/spaces.md says why not SigLIP).
DEFAULT_PRELOAD = ("openai/clip-vit-base-patch32", "google/siglip2-base-patch16-224")
PRELOAD_FILES = ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.json", "merges.txt", "model.safetensors")
# Repositories whose files differ from CLIP's list (only files that exist there; no tokenizer.model needed).
PRELOAD_FILES_OF = {
    "google/siglip2-base-patch16-224": ("config.json", "preprocessor_config.json", "tokenizer.json",
                                        "tokenizer_config.json", "special_tokens_map.json", "model.safetensors"),
}


def preload_files(repo: str) -> tuple[str, ...]:
    """The files `preload_from_hub` downloads for a repository (CLIP's list unless PRELOAD_FILES_OF says)."""
    return PRELOAD_FILES_OF.get(repo, PRELOAD_FILES)

# torch. The repository pins torch==2.13.0 (requirements.txt); from PyPI that is the CUDA build.
TORCH_PIN = "2.13.0"
# spaces-dependencies.md / spaces-gpus.md ("Framework specific requirements"): an extra index URL in
# requirements.txt selects PyTorch's own wheels; the CPU index serves the `+cpu` builds.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# spaces-zerogpu.md, "Supported Versions": "PyTorch: Almost all versions from 2.8.0 to latest are
# supported", full list "2.8.0, 2.9.1, 2.10.0, 2.11.0"; 2.13.0 is not on it, so ZeroGPU gets the
# newest listed one.
TORCH_ZEROGPU = "2.11.0"
# spaces-zerogpu.md, "Supported Versions": "Python: 3.12.12, 3.10.13". 3.12.12, because on 3.10
# pip resolves transformers to 5.20 (5.21 and later require Python >= 3.11), older than we test.
PYTHON_ZEROGPU = "3.12.12"
# spaces-config-reference.md, `python_version`: "Any valid Python 3.x or 3.x.x version. Defaults
# to 3.10." CPU and GPU hardware get 3.11, the Python the test suite runs on.
PYTHON_DEFAULT = "3.11"


@dataclass(frozen=True)
class Hardware:
    """One --hardware choice: the Hub's flavor name and what the bundle installs for it."""

    name: str      # what --hardware takes
    flavor: str    # the Hub's SpaceHardware value (create_repo's space_hardware, suggested_hardware)
    kind: str      # "zerogpu", "cpu" or "gpu"
    python: str    # the front matter's python_version
    summary: str   # vCPU / RAM / GPU, from spaces-overview.md and spaces-gpus.md ("Hardware Specs")

    @property
    def torch_requirement(self) -> str:
        if self.kind == "zerogpu":
            return f"torch=={TORCH_ZEROGPU}"
        if self.kind == "cpu":
            return f"torch=={TORCH_PIN}+cpu"
        return f"torch=={TORCH_PIN}"  # PyPI's default build is the CUDA one


def _hardware_table() -> dict[str, Hardware]:
    specs = {  # spaces-overview.md "Hardware resources" and spaces-gpus.md "Hardware Specs"
        "cpu-basic": "2 vCPU, 16 GB RAM, no GPU; free hourly, but creating a Gradio Space on it needs PRO",
        "cpu-upgrade": "8 vCPU, 32 GB RAM, no GPU; $0.03/h",
        "t4-small": "4 vCPU, 15 GB RAM, T4 16 GB; $0.40/h",
        "t4-medium": "8 vCPU, 30 GB RAM, T4 16 GB; $0.60/h",
        "l4x1": "8 vCPU, 30 GB RAM, L4 24 GB; $0.80/h",
        "l4x4": "48 vCPU, 186 GB RAM, 4x L4 96 GB; $3.80/h",
        "l40sx1": "8 vCPU, 62 GB RAM, L40S 48 GB; $1.80/h",
        "l40sx4": "48 vCPU, 382 GB RAM, 4x L40S 192 GB; $8.30/h",
        "l40sx8": "192 vCPU, 1534 GB RAM, 8x L40S 384 GB; $23.50/h",
        "a10g-small": "4 vCPU, 15 GB RAM, A10G 24 GB; $1.00/h",
        "a10g-large": "12 vCPU, 46 GB RAM, A10G 24 GB; $1.50/h",
        "a10g-largex2": "24 vCPU, 92 GB RAM, 2x A10G 48 GB; $3.00/h",
        "a10g-largex4": "48 vCPU, 184 GB RAM, 4x A10G 96 GB; $5.00/h",
        "a100-large": "12 vCPU, 142 GB RAM, A100 80 GB; $2.50/h",
        "a100x4": "48 vCPU, 568 GB RAM, 4x A100 320 GB; $10.00/h",
        "a100x8": "96 vCPU, 1136 GB RAM, 8x A100 640 GB; $20.00/h",
    }
    table = {"zero-gpu": Hardware("zero-gpu", "zero-a10g", "zerogpu", PYTHON_ZEROGPU,
                                  "ZeroGPU: a half RTX Pro 6000 Blackwell (48 GB) lent per @spaces.GPU call; free accounts: 2 Spaces")}
    for flavor, summary in specs.items():
        table[flavor] = Hardware(flavor, flavor, "cpu" if flavor.startswith("cpu-") else "gpu", PYTHON_DEFAULT, summary)
    return table


HARDWARE = _hardware_table()
HARDWARE_ALIASES = {"zero-a10g": "zero-gpu", "zerogpu": "zero-gpu"}


class UserError(Exception):
    """A problem the user can fix; printed as one `error: ...` line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# The bundle


def bundle_files(root: Path = ROOT) -> list[Path]:
    """The repository files that go into the Space, relative to root, sorted."""
    out: list[Path] = []
    for top in BUNDLE_PATHS:
        path = root / top
        if not path.exists():
            raise UserError(f"{path} is missing; run this from a complete CLIP Lab checkout")
        if path.is_file():
            out.append(Path(top))
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name in EXCLUDED_NAMES or name.endswith(EXCLUDED_SUFFIXES):
                    continue
                out.append((Path(dirpath) / name).relative_to(root))
    return sorted(out, key=lambda p: p.as_posix())


def installed_gradio() -> str:
    """The gradio version we test with: the installed one."""
    import gradio

    return gradio.__version__


def read_requirements(root: Path = ROOT) -> list[str]:
    """The repository's requirement lines (comments and blanks dropped)."""
    lines = []
    for raw in (root / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def requirement_name(line: str) -> str:
    """'gradio[mcp]>=6.16,<7' -> 'gradio'; normalised as pip does (PEP 503)."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else ""


def make_requirements(hw: Hardware, gradio_version: str, root: Path = ROOT) -> str:
    """requirements.txt for this hardware: the repository's, with torch and gradio pinned for it."""
    from packaging.requirements import Requirement

    out = [f"# CLIP Lab on a Hugging Face Space ({hw.name}); written by scripts/deploy_space.py from requirements.txt.",
           "# Never add torchvision: PyPI's build breaks beside this torch (CLIPImageProcessor uses PIL without it)."]
    if hw.kind == "cpu":
        out += ["# The CPU wheel from PyTorch's own index (spaces-gpus.md, 'Framework specific requirements': an",
                "# --extra-index-url line selects PyTorch's wheels); PyPI's torch is the multi-GB CUDA build.",
                f"--extra-index-url {TORCH_CPU_INDEX}"]
    elif hw.kind == "zerogpu":
        out += [f"# spaces-zerogpu.md, 'Supported Versions': PyTorch 2.8.0, 2.9.1, 2.10.0, 2.11.0 "
                f"(2.{TORCH_PIN.split('.')[1]} is not listed);",
                "# `spaces` provides @spaces.GPU (spaces-zerogpu.md, 'Getting started': 'Import the spaces module')."]
    else:
        out += ["# PyPI's torch is the CUDA build, which a GPU Space wants (CLIP_LAB_DEVICE=auto runs the models on CUDA)."]
    out.append(hw.torch_requirement)
    repo = read_requirements(root)
    if hw.kind == "zerogpu" and "spaces" not in {requirement_name(line) for line in repo}:
        out.append("spaces")
    for line in repo:
        name = requirement_name(line)
        if name == "torch":
            continue
        if name == "gradio":
            req = Requirement(line)
            if req.specifier and not req.specifier.contains(gradio_version, prereleases=True):
                raise UserError(f"installed gradio {gradio_version} is outside requirements.txt's {line!r}; "
                                "install a gradio that requirements.txt allows, then rerun")
            extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
            out.append("# = the README's sdk_version: the gradio the tests ran on")
            out.append(f"gradio{extras}=={gradio_version}")
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def license_id(root: Path = ROOT) -> str | None:
    first = (root / "LICENSE").read_text(errors="replace").lstrip().splitlines()[:1]
    return "mit" if first and first[0].strip().lower().startswith("mit license") else None


def front_matter(hw: Hardware, gradio_version: str, preload: tuple[str, ...], root: Path = ROOT) -> dict:
    """The README's YAML block (spaces-config-reference.md lists every key)."""
    meta: dict = {
        "title": "CLIP Lab",
        "emoji": "📎",
        "colorFrom": "indigo",
        "colorTo": "purple",
        "sdk": "gradio",
        "sdk_version": gradio_version,
        "python_version": hw.python,
        "app_file": "app.py",
        # Not in the reference's list of flavors, but the Hub's own name for ZeroGPU (SpaceHardware.ZERO_A10G).
        "suggested_hardware": hw.flavor,
    }
    if preload:
        meta["preload_from_hub"] = [f"{repo} {','.join(preload_files(repo))}" for repo in preload]
        meta["models"] = list(preload)
    lic = license_id(root)
    if lic:
        meta["license"] = lic
    meta["short_description"] = "See CLIP work: zero-shot, similarity, embedding map"
    return meta


def make_readme(hw: Hardware, gradio_version: str, preload: tuple[str, ...], source_url: str | None,
                root: Path = ROOT) -> str:
    import yaml

    meta = yaml.safe_dump(front_matter(hw, gradio_version, preload, root), sort_keys=False, allow_unicode=True,
                          width=1000)
    back = f"[{source_url}]({source_url})" if source_url else "the CLIP Lab repository"
    models = ", ".join(f"`{m}`" for m in preload) or "none"
    return (f"---\n{meta}---\n\n# CLIP Lab\n\n"
            "See CLIP work: which prompt wins and why (zero-shot), how a batch's image–text matrix becomes the "
            "contrastive loss (similarity matrix), and where images and captions land in the shared embedding "
            "space (embedding map, UMAP or PCA, with the modality gap).\n\n"
            "It starts on `shapes-tiny`, a small CLIP trained on a synthetic shapes world and bundled in "
            f"`assets/models/`; the picker also loads Hub models: CLIP, SigLIP, SigLIP 2, MetaCLIP 2 (preloaded here: {models}).\n\n"
            f"Hardware: {hw.name} ({hw.summary}). Settings are Space variables (`CLIP_LAB_*`, see docs/app.md "
            f"in the repository). Source, tests and docs: {back}.\n")


# Binary formats and archives, routed to LFS/Xet: the patterns the Hub writes into a new repo's
# .gitattributes (models and archives) plus its dataset template's audio and image lines.
LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.lz4",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle",
    "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite",
    "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*", "*.gguf",
    # audio
    "*.pcm", "*.sam", "*.raw", "*.aac", "*.flac", "*.mp3", "*.ogg", "*.wav",
    # images
    "*.bmp", "*.gif", "*.png", "*.tiff", "*.jpg", "*.jpeg", "*.webp", "*.ico",
    # video, documents
    "*.mp4", "*.webm", "*.pdf",
)
LFS_ATTRS = "filter=lfs diff=lfs merge=lfs -text"


def _wildmatch(pattern: str, path: str) -> bool:
    """gitattributes matching for our patterns: no slash -> the file's name; else the whole path,
    where '**/' spans any number of folders and '*' stays inside one."""
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    rx, i = "", 0
    pattern = pattern.lstrip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            rx, i = rx + "(?:.*/)?", i + 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            rx, i = rx + "/.*", i + 3
        elif pattern[i] == "*":
            rx, i = rx + "[^/]*", i + 1
        elif pattern[i] == "?":
            rx, i = rx + "[^/]", i + 1
        else:
            rx, i = rx + re.escape(pattern[i]), i + 1
    return re.fullmatch(rx, path) is not None


def _attr_path(rel: str) -> str:
    """A path as an anchored .gitattributes pattern; characters that would need quoting become '?'."""
    return "/" + re.sub(r"[^A-Za-z0-9._/+-]", "?", rel)


def is_binary(path: Path) -> bool:
    """Git's test: a NUL byte in the first 8000 bytes."""
    with open(path, "rb") as f:
        return b"\0" in f.read(8000)


def make_gitattributes(bundle: Path, files: list[str]) -> str:
    """The standard patterns, then one line per file that is big or binary and matched by none."""
    lines = ["# Binaries and files over 10 MB go to LFS/Xet: the Hub refuses them in plain git.",
             *(f"{p} {LFS_ATTRS}" for p in LFS_PATTERNS)]
    extra = [rel for rel in files
             if not any(_wildmatch(p, rel) for p in LFS_PATTERNS)
             and ((bundle / rel).stat().st_size > LFS_SIZE or is_binary(bundle / rel))]
    if extra:
        lines.append("# this bundle's other large or binary files")
        lines += [f"{_attr_path(rel)} {LFS_ATTRS}" for rel in extra]
    return "\n".join(lines) + "\n"


def lfs_patterns(gitattributes: str) -> list[str]:
    """The patterns of a .gitattributes whose attributes include filter=lfs (the files we write)."""
    out = []
    for line in gitattributes.splitlines():
        pattern, _, attrs = line.strip().partition(" ")
        if pattern and not pattern.startswith("#") and "filter=lfs" in attrs.split():
            out.append(pattern)
    return out


def goes_to_lfs(rel: str, patterns: list[str]) -> bool:
    return any(_wildmatch(p, rel) for p in patterns)


def build_bundle(dest: Path, hw: Hardware, preload: tuple[str, ...] = DEFAULT_PRELOAD,
                 source_url: str | None = None, root: Path = ROOT, gradio_version: str | None = None) -> list[dict]:
    """Write the bundle into dest (empty or absent); returns one row per file: path, size, lfs."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest} exists and is not an empty folder; pick a new --dry-run folder or remove it")
    gradio_version = gradio_version or installed_gradio()
    files = bundle_files(root)
    dest.mkdir(parents=True, exist_ok=True)
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    (dest / "README.md").write_text(make_readme(hw, gradio_version, preload, source_url, root), encoding="utf-8")
    (dest / "requirements.txt").write_text(make_requirements(hw, gradio_version, root))
    names = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    attrs = make_gitattributes(dest, names)
    (dest / ".gitattributes").write_text(attrs)
    patterns = lfs_patterns(attrs)
    rows = []
    for rel in sorted(names + [".gitattributes"]):
        rows.append({"path": rel, "size": (dest / rel).stat().st_size, "lfs": goes_to_lfs(rel, patterns)})
    return rows


def format_listing(rows: list[dict], dest: Path, hw: Hardware) -> str:
    total = sum(r["size"] for r in rows)
    lfs = sum(r["size"] for r in rows if r["lfs"])
    out = [f"bundle for {hw.name} ({hw.flavor}) in {dest}: {len(rows)} files, {total / 1e6:.1f} MB, "
           f"{lfs / 1e6:.1f} MB of it to LFS/Xet",
           f"{'size':>12}  {'LFS':<3}  path"]
    out += [f"{r['size']:>12,}  {'yes' if r['lfs'] else 'no':<3}  {r['path']}" for r in rows]
    return "\n".join(out)
