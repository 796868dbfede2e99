"""Installing the package beside a torch the environment already has: `pyproject.toml` states
ranges (a library that pins torch downgrades or conflicts with the user's), and `constraints.txt`
holds the exact environment the release and the README's numbers were made in. No test here
touches the network."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

# Another torch 2.x than the pinned one, with its own torchvision: what a user may already have.
OTHER_TORCH = {"torch": "2.5.0", "torchvision": "0.20.0"}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(extras: bool = True) -> list[Requirement]:
    meta = project()
    found = [Requirement(r) for r in meta["dependencies"]]
    if extras:
        found += [Requirement(r) for group in meta["optional-dependencies"].values() for r in group]
    return found


def constraint_pins() -> dict[str, str]:
    """constraints.txt as {canonical name: version}; every line that is not a comment is a pin."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"constraints.txt: {line!r} is not an exact pin NAME==VERSION"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = match.group(2)
    return pins


def test_every_dependency_is_a_range_with_a_lower_bound():
    for req in requirements():
        operators = {spec.operator for spec in req.specifier}
        assert operators & {">=", ">", "~="}, f"{req}: no lower bound"
        assert not operators & {"==", "==="}, f"{req}: an exact pin belongs in constraints.txt"


def test_torch_and_torchvision_accept_another_2x_and_the_pinned_versions():
    by_name = {canonicalize_name(r.name): r.specifier for r in requirements()}
    pins = constraint_pins()
    for name, other in OTHER_TORCH.items():
        assert by_name[name].contains(other), f"{name} {other} is refused: {by_name[name]}"
        assert by_name[name].contains(pins[name]), f"the pinned {name} is refused"
    assert not by_name["torch"].contains("3.0")  # a major version may break what is used


def test_constraints_pin_every_dependency_inside_its_range():
    pins = constraint_pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt pins no {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside {req.specifier}"


def test_constraints_pin_what_a_release_records():
    from interpscore.simulate.pinned import library_versions

    pins = constraint_pins()
    for name in [*library_versions(), "torchvision"]:
        assert canonicalize_name(name) in pins, f"constraints.txt pins no {name}"



def test_the_readmes_cpu_command_takes_the_pinned_torch():
    """A CPU build of another version would be replaced by `-c constraints.txt` afterwards."""
    readme = (ROOT / "README.md").read_text()
    (command,) = [line for line in readme.splitlines() if "download.pytorch.org/whl/cpu" in line]
    pins = constraint_pins()
    for name in ("torch", "torchvision"):
        assert f"{name}=={pins[name]} " in command, command


# --- pip's own resolver on the project's metadata, offline -------------------------------------

def _fake_distribution(site: Path, name: str, version: str, requires: tuple[str, ...] = ()):
    """An installed distribution as pip sees one: a dist-info folder, no code."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("".join(f"{info.name}/{f},,\n"
                                         for f in ("METADATA", "INSTALLER", "RECORD")))


def _offline_pip_env() -> dict:
    """No configuration file, no PIP_* variable: no index, find-links or constraint of this
    machine's (pip reads none when PIP_CONFIG_FILE is the null device)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1")
    return env


def _build_project_wheel(source: Path, out: Path, pyproject: str) -> Path:
    """A wheel of the project's metadata: its pyproject.toml, README and LICENSE with an empty
    package, built by setuptools as `pip install -e .` would (dependencies as they are stated)."""
    if source.exists():
        shutil.rmtree(source)
    (source / "src" / "interpscore").mkdir(parents=True)
    (source / "src" / "interpscore" / "__init__.py").write_text("")
    (source / "pyproject.toml").write_text(pyproject)
    for name in ("README.md", "LICENSE"):
        shutil.copy(ROOT / name, source)
    if out.exists():
        shutil.rmtree(out)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "--no-index", "-q", "-w", str(out),
                           str(source)], env=_offline_pip_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob("interpscore-*.whl")
    return wheel


def _dry_run(python: Path, wheels: Path, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--dry-run", "--no-index", "--find-links", str(wheels),
                           "--report", str(report), "interpscore"],
                          env=_offline_pip_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pip_keeps_the_torch_an_environment_already_has(tmp_path):
    """A fresh environment holding torch 2.5.0 / torchvision 0.20.0 (and every other dependency
    at its pinned version, all as bare dist-info folders): pip's resolver, on the project's
    metadata and with no index at all, plans to install interpscore and nothing else. With the
    old exact pin `torch==2.14.1` the same resolution fails: the test sees the conflict."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True,
                   timeout=120)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c",
                                "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    pins = constraint_pins()
    for req in requirements(extras=False):
        name = canonicalize_name(req.name)
        if name not in OTHER_TORCH:
            _fake_distribution(site, req.name, pins[name])
    _fake_distribution(site, "torch", OTHER_TORCH["torch"])
    _fake_distribution(site, "torchvision", OTHER_TORCH["torchvision"],
                       (f"torch=={OTHER_TORCH['torch']}",))

    pyproject = (ROOT / "pyproject.toml").read_text()
    wheel = _build_project_wheel(tmp_path / "project", tmp_path / "wheels", pyproject)
    done = _dry_run(python, wheel.parent, tmp_path / "report.json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    planned = {item["metadata"]["name"]: item["metadata"]["version"]
               for item in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert planned == {"interpscore": project()["version"]}, planned

    # The control: the pins this file replaced make pip want another torch (here: none to find).
    pinned = re.sub(r'"torch>=[^"]*"', '"torch==2.14.1"', pyproject, count=1)
    pinned = re.sub(r'"torchvision>=[^"]*"', '"torchvision==0.29.1"', pinned, count=1)
    assert pinned != pyproject
    wheel = _build_project_wheel(tmp_path / "pinned", tmp_path / "pinned_wheels", pinned)
    refused = _dry_run(python, wheel.parent, tmp_path / "pinned.json")
    assert refused.returncode != 0 and "torch" in refused.stderr, refused.stderr[-2000:]
