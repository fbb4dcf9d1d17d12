"""Packaging: the top-level configs/ and data_builders/ install as
fer_jax.configs and fer_jax.data_builders (nothing generic at the top of
site-packages), the source checkout imports them by the same names, and
--config takes a packaged config by name from any directory."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
from package_sources import copy_package_sources

from fer_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["baseline", "cgan_wsc", "gndl", "groupgan", "ifgan", "sna"]


def _source_packages(folder: str, name: str) -> list[str]:
  """Every package (folder with __init__.py) under ROOT/folder, named as
  installed (``name`` + its dotted path)."""
  out = []
  for d, dirs, files in os.walk(os.path.join(ROOT, folder)):
    dirs[:] = [x for x in dirs if x != "__pycache__"]
    if "__init__.py" in files:
      rel = os.path.relpath(d, os.path.join(ROOT, folder))
      out.append(name if rel == "." else
                 ".".join([name] + rel.split(os.sep)))
  return sorted(out)


# ------------------------------------------------------------ fast checks

@pytest.mark.parametrize("spec,want", [
    ("ifgan", "ifgan.py"),
    ("ifgan.py", "ifgan.py"),
    ("ifgan.py:tiny", "ifgan.py:tiny"),
    ("ifgan:tiny", "ifgan.py:tiny"),
    ("configs/gndl.py:ckplus", "gndl.py:ckplus"),
    ("./configs/sna.py", "sna.py"),
])
def test_a_config_is_found_by_name_from_any_directory(tmp_path, monkeypatch,
                                                      spec, want):
  monkeypatch.chdir(tmp_path)  # no configs/ here
  got = config_lib.config_file(spec)
  assert got == os.path.join(config_lib.configs_dir(), want)
  assert os.path.isfile(got.partition(":")[0])


def test_an_existing_file_wins_over_a_packaged_name(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "gndl.py").write_text("# a local edit\n")
  assert config_lib.config_file("configs/gndl.py:x") == "configs/gndl.py:x"
  # relative to a given root (what compare does with the repository)
  assert (config_lib.config_file("configs/gndl.py", root=ROOT)
          == os.path.join(ROOT, "configs", "gndl.py"))


def test_an_unknown_config_names_the_packaged_ones(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  for spec in ("nope", "nope.py:ckplus", "some/dir/gndl.py", "_x"):
    with pytest.raises(ValueError, match="packaged configs: baseline, "
                       "cgan_wsc, gndl, groupgan, ifgan, sna"):
      config_lib.config_file(spec)
  assert config_lib.packaged_configs() == CONFIGS


def test_resolve_config_flag_rewrites_only_the_config_value(tmp_path,
                                                            monkeypatch):
  monkeypatch.chdir(tmp_path)
  d = config_lib.configs_dir()
  argv = ["main", "--config=gndl:ckplus", "--config.data.fold=3",
          "--workdir=w"]
  assert config_lib.resolve_config_flag(argv) == [
      "main", f"--config={d}/gndl.py:ckplus", "--config.data.fold=3",
      "--workdir=w"]
  assert config_lib.resolve_config_flag(["main", "--config", "sna"]) == [
      "main", "--config", f"{d}/sna.py"]


def test_load_config_module_takes_a_name():
  cfg = config_lib.load_config_module("ifgan").get_config("tiny")
  assert cfg.method == "ifgan"


def test_the_checkout_imports_builders_and_configs_inside_fer_jax():
  """From the source tree (PYTHONPATH=repo) the top-level folders are
  fer_jax.data_builders and fer_jax.configs; no top-level data_builders
  module is ever imported (TFDS would register each builder twice)."""
  code = ("import sys, fer_jax.data_builders.fer_synth as f, "
          "fer_jax.configs as c, fer_jax.data.registry as r\n"
          "r.builder_class('ckplus')\n"
          "print(f.__file__, c.__file__, "
          "any(m == 'data_builders' or m.startswith('data_builders.') "
          "for m in sys.modules))")
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  builders, configs, top_level = out.stdout.split()
  assert builders == os.path.join(ROOT, "data_builders", "fer_synth",
                                  "__init__.py")
  assert configs == os.path.join(ROOT, "configs", "__init__.py")
  assert top_level == "False"


def test_main_takes_a_config_by_name(tmp_path):
  """fer_jax.main from a directory without configs/: a name resolves (the
  config loads: its bad override is reported as one), an unknown one is
  refused naming the packaged configs. Both stop before JAX starts."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  base = [sys.executable, "-m", "fer_jax.main", f"--workdir={tmp_path}/w"]
  out = subprocess.run(base + ["--config=ifgan.py:tiny",
                               "--config.no_such_field=1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 2
  assert "bad config override" in out.stderr, out.stderr[-3000:]
  out = subprocess.run(base + ["--config=nope"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 2
  assert "no packaged config named 'nope'" in out.stderr, out.stderr[-3000:]
  assert not (tmp_path / "w").exists()


def test_pyproject_lists_every_package():
  """pyproject.toml names the packages one by one (the mapped folders rule
  out setuptools' find): every folder with an __init__.py must be there."""
  tomllib = pytest.importorskip("tomllib")
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)
  tool = project["tool"]["setuptools"]
  assert tool["package-dir"] == {"fer_jax.configs": "configs",
                                 "fer_jax.data_builders": "data_builders"}
  want = (_source_packages("fer_jax", "fer_jax")
          + _source_packages("configs", "fer_jax.configs")
          + _source_packages("data_builders", "fer_jax.data_builders"))
  assert sorted(tool["packages"]) == sorted(want)


def test_pyproject_extras():
  """Accelerator jax, torch and the TensorBoard viewer are extras; [test]
  itself pulls no torch (from the default index that is the CUDA build)."""
  tomllib = pytest.importorskip("tomllib")
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
  assert extras["cuda"] == ["jax[cuda12]"] and extras["tpu"] == ["jax[tpu]"]
  assert extras["tensorboard"] == ["tensorboard"]
  assert [r for r in extras["torch"] if r.startswith("torch")]
  assert not [r for r in extras["test"] if r.startswith("torch")]
  # Photos need OpenCV's bundled detectors; exports need flatbuffers (an
  # optional dependency of jax.export); the tests use both, and
  # scikit-image's astronaut photo.
  assert extras["predict"] == ["opencv-python-headless>=4,<5"]
  assert extras["export"] == ["flatbuffers"]
  for r in ("opencv-python-headless>=4,<5", "scikit-image", "flatbuffers"):
    assert r in extras["test"], r


# ------------------------------------------------------------ the wheel

@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """A wheel built (pip wheel --no-deps) from a copy of the sources."""
  setuptools = pytest.importorskip("setuptools")
  major = int(setuptools.__version__.split(".")[0])
  if major < 68:
    pytest.skip(f"setuptools {setuptools.__version__} < 68 (build-system)")
  tmp = tmp_path_factory.mktemp("wheel")
  src = copy_package_sources(tmp / "src")
  out = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps",
       "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
      capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  (whl,) = (tmp / "dist").glob("fer_jax-*.whl")
  return whl


def test_the_wheel_holds_configs_and_builders_inside_fer_jax(wheel):
  names = zipfile.ZipFile(wheel).namelist()
  top = {n.split("/")[0] for n in names}
  assert top == {"fer_jax", f"{wheel.name.split('-py3')[0]}.dist-info"}
  for c in CONFIGS:
    assert f"fer_jax/configs/{c}.py" in names
  for pkg in _source_packages("data_builders", "fer_jax.data_builders"):
    assert pkg.replace(".", "/") + "/__init__.py" in names
  assert "fer_jax/data_builders/fer_synth/generator.py" in names
  assert not any(n.startswith(("data_builders/", "configs/", "tests/"))
                 for n in names)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
  """The wheel installed (no dependencies: they are this environment's)
  into a folder put first on PYTHONPATH, run from an empty directory."""
  target = tmp_path_factory.mktemp("site")
  out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps",
                        "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert not (target / "data_builders").exists()
  cwd = tmp_path_factory.mktemp("elsewhere")
  return target, cwd, dict(os.environ, PYTHONPATH=str(target))


def test_the_installed_wheel_finds_its_configs_and_builders(installed):
  target, cwd, env = installed
  code = ("import json, sys\n"
          "from fer_jax import config_lib, compare\n"
          "import fer_jax.data_builders.fer_synth as f\n"
          "from fer_jax.data import registry\n"
          "registry.builder_class('affectnet')\n"
          "run = compare.Run('gndl', 'baseline', 0, 0, 4, "
          "'configs/gndl.py:baseline')\n"
          "print(json.dumps([config_lib.config_file('ifgan.py:tiny'), "
          "f.__file__, run.argv('/w')[3], "
          "compare.resolved_config(run)['method']]))")
  out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  config, builder, compare_config, method = json.loads(
      out.stdout.splitlines()[-1])
  pkg = os.path.join(str(target), "fer_jax")
  assert config == os.path.join(pkg, "configs", "ifgan.py") + ":tiny"
  assert builder == os.path.join(pkg, "data_builders", "fer_synth",
                                 "__init__.py")
  assert compare_config == (
      "--config=" + os.path.join(pkg, "configs", "gndl.py") + ":baseline")
  assert method == "baseline"  # gndl.py:baseline, the ResNet-18 with CE


@pytest.mark.slow
def test_the_installed_wheel_trains_a_packaged_config(installed, tmp_path):
  """The README's command with the repository absent: a config by name."""
  _, cwd, env = installed
  env = dict(env, FER_JAX_DATA_DIR=str(tmp_path / "tfds"),
             JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "fer_jax.main", "--config=ifgan.py:tiny",
       f"--workdir={tmp_path}/wd", "--compilation_cache=",
       "--config.train.num_steps=2"],
      cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads((tmp_path / "wd" / "eval" / "report.json").read_text())
  assert report["method"] == "ifgan" and report["step"] == 2
