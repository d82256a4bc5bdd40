"""Every bad input gives one clear line with the fix (exit code 2), never a traceback."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_fixtures import REPO_ROOT, free_port, run_cli
from cli_fixtures import file_server as serve_folder

from mdbatch import models
from mdbatch.errors import CliError


def assert_one_line(proc, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    msg = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert msg.count("\n") == 0, f"not one line: {msg!r}"
    assert msg.startswith("error: ")
    for n in needles:
        assert n in msg, (n, msg)


@pytest.fixture()
def photos(tmp_path: Path, camera_trap_dir: Path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    (d / "a.jpg").write_bytes((camera_trap_dir / "pheasant_web.jpg").read_bytes())
    return d


def test_missing_folder(tmp_path: Path) -> None:
    p = run_cli("detect", str(tmp_path / "nope"), "--model", "demo", home=tmp_path / "h")
    assert_one_line(p, "folder not found", "pass the folder that holds your images")


def test_path_is_a_file(tmp_path: Path, photos: Path) -> None:
    p = run_cli("detect", str(photos / "a.jpg"), "--model", "demo", home=tmp_path / "h")
    assert_one_line(p, "is not a folder")


def test_no_images_found(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "readme.txt").write_text("x")
    (d / "clip.mp4").write_bytes(b"\0")
    p = run_cli("detect", str(d), "--model", "demo", home=tmp_path / "h")
    assert_one_line(p, "no images found", ".jpg")


def test_unknown_model_name(tmp_path: Path, photos: Path) -> None:
    p = run_cli("detect", str(photos), "--model", "MDV9", home=tmp_path / "h")
    assert_one_line(p, "unknown model name 'MDV9'", "MDV5A", "demo", ".onnx")


def test_model_file_missing(tmp_path: Path, photos: Path) -> None:
    p = run_cli("detect", str(photos), "--model", str(tmp_path / "m.onnx"), home=tmp_path / "h")
    assert_one_line(p, "model file not found")


@pytest.mark.parametrize("content", [b"", b"this is not a protobuf \xff\xfe"])
def test_model_file_unreadable(tmp_path: Path, photos: Path, content: bytes) -> None:
    m = tmp_path / "broken.onnx"
    m.write_bytes(content)
    p = run_cli("detect", str(photos), "--model", str(m), home=tmp_path / "h")
    assert_one_line(p, str(m))
    assert "empty" in p.stderr or "not a readable ONNX model" in p.stderr


def test_model_is_a_folder_or_wrong_kind(tmp_path: Path, photos: Path) -> None:
    assert_one_line(run_cli("detect", str(photos), "--model", str(tmp_path), home=tmp_path / "h"),
                    "is a folder")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0" * 10)
    assert_one_line(run_cli("detect", str(photos), "--model", str(other), home=tmp_path / "h"),
                    "neither .onnx nor .pt")


def test_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run_cli("serve", "--port", str(port), home=tmp_path / "h", timeout=60)
    assert_one_line(p, f"port {port} is in use", "--port")


def test_api_unreachable(tmp_path: Path) -> None:
    port = free_port()
    p = run_cli("status", "0123456789abcdef0123456789abcdef", "--api", f"http://127.0.0.1:{port}",
                home=tmp_path / "h")
    assert_one_line(p, "cannot reach the API", f"127.0.0.1:{port}", "--api")
    p = run_cli("list", "--api", "not a url", home=tmp_path / "h")
    assert_one_line(p, "is not a URL")


def test_view_errors(tmp_path: Path) -> None:
    assert_one_line(run_cli("view", str(tmp_path / "none.json"), "--no-open", home=tmp_path / "h"),
                    "results file not found")
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    assert_one_line(run_cli("view", str(bad), "--no-open", home=tmp_path / "h"),
                    "not a MegaDetector batch output file")


def test_console_script_is_installed() -> None:
    """`./run detect` execs .venv/bin/mdbatch: the console script must exist and start."""
    import subprocess
    import sys

    script = Path(sys.executable).parent / "mdbatch"
    assert script.exists(), "pip install -e . declares the mdbatch console script (./run setup does it)"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 0 and "detect" in proc.stdout and "view" in proc.stdout


# --- known models: download once, checksum, offline message (loopback HTTP, no internet) ----------

@pytest.fixture()
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()

    with serve_folder(root) as (url, _):
        yield url + "/", root


def _known(monkeypatch: pytest.MonkeyPatch, url: str, md5: str) -> None:
    monkeypatch.setitem(models.KNOWN_MODELS, "MDV5A",
                        models.KnownModel("MDV5A", "v5a.0.0", url, md5, 0.2, 0.05))


def test_known_model_without_network_says_how_to_pass_a_file(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _known(monkeypatch, f"http://127.0.0.1:{free_port()}/md_v5a.0.0.pt", "0" * 32)
    with pytest.raises(CliError) as e:
        models.resolve("MDV5A", tmp_path / "models", tmp_path / "dl")
    msg = str(e.value)
    assert "cannot download MDV5A" in msg and "--model /path/to/md_v5a.0.0.pt" in msg
    assert not list((tmp_path / "dl").iterdir()), "no partial file is left behind"


def test_known_model_download_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         file_server: tuple[str, Path]) -> None:
    base, root = file_server
    (root / "md_v5a.0.0.pt").write_bytes(b"weights" * 1000)
    _known(monkeypatch, base + "md_v5a.0.0.pt", "f" * 32)
    with pytest.raises(CliError, match="corrupt"):
        models.resolve("MDV5A", tmp_path / "models", tmp_path / "dl")
    assert not (tmp_path / "dl" / "md_v5a.0.0.pt").exists()

    good = hashlib.md5((root / "md_v5a.0.0.pt").read_bytes()).hexdigest()
    _known(monkeypatch, base + "md_v5a.0.0.pt", good)
    # conversion runs in the PyTorch interpreter (MDBATCH_TORCH_PYTHON, .venv-torch, else this one)
    probe = subprocess.run([models.torch_python(), "-c", "import torch"], capture_output=True)
    has_torch = probe.returncode == 0
    if not has_torch:
        with pytest.raises(CliError, match="PyTorch is not installed"):
            models.resolve("MDV5A", tmp_path / "models", tmp_path / "dl")
    else:  # with torch, these bytes are no checkpoint: the conversion fails with a clear message
        with pytest.raises(CliError, match="converting"):
            models.resolve("MDV5A", tmp_path / "models", tmp_path / "dl")
    assert (tmp_path / "dl" / "md_v5a.0.0.pt").is_file(), "a checked download is kept (downloaded once)"
    (root / "md_v5a.0.0.pt").unlink()  # a second resolve must not download again
    with pytest.raises(CliError, match=r"PyTorch is not installed|converting"):
        models.resolve("MDV5A", tmp_path / "models", tmp_path / "dl")


def test_onnx_file_is_registered_under_a_content_name(tmp_path: Path) -> None:
    from scoring.demo_model import build_rect_model

    src = build_rect_model(tmp_path / "mine" / "my model.onnx")
    r = models.resolve(str(src), tmp_path / "models", tmp_path / "dl")
    assert r.name.startswith("my-model-") and r.path == tmp_path / "models" / f"{r.name}.onnx"
    assert r.path.read_bytes() == src.read_bytes()
    assert Path(str(r.path) + ".json").is_file() and r.typical_threshold == 0.2
    assert models.resolve(str(src), tmp_path / "models", tmp_path / "dl") == r
