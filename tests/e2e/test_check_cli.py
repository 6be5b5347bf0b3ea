"""`ftgate check` end to end on the real embedded base: bad uploads are refused with exit 3 and a reason;
the bundled samples get their verdicts (benign approves; harmful, identity-shifting and hidden-10 never do)."""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import EXAMPLES, load_report, run_cli

pytestmark = pytest.mark.slow


def _edit_config(adapter: Path, **changes) -> None:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg.update(changes)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))


def _edit_tensors(adapter: Path, fn) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(adapter / "adapter_model.safetensors")
    save_file(fn(tensors), adapter / "adapter_model.safetensors")


def _nan(tensors):
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name][0, 0] = float("nan")
    return tensors


def _wrong_shape(tensors):
    import torch

    return {k: (torch.zeros(v.shape[0], 100) if "lora_A" in k else v) for k, v in tensors.items()}


def _bad_uploads(blank: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (upload, a fragment the refusal must name)."""
    out: dict[str, tuple[Path, str]] = {}

    def variant(name: str) -> Path:
        d = root / name
        shutil.copytree(blank, d)
        return d

    z = root / "traversal.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.write(blank / "adapter_config.json", "adapter_config.json")
        f.writestr("../../evil.txt", "x")
    out["path traversal"] = (z, "evil.txt")

    t = root / "link.tar.gz"
    with tarfile.open(t, "w:gz") as f:
        f.add(blank / "adapter_config.json", "adapter_config.json")
        info = tarfile.TarInfo("adapter_model.safetensors")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        f.addfile(info)
    out["symlink"] = (t, "link")

    d = variant("pickle")
    (d / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    out["pickle weights"] = (d, "adapter_model.bin")

    d = variant("noconfig")
    (d / "adapter_config.json").unlink()
    out["missing config"] = (d, "adapter_config.json")

    d = variant("badjson")
    (d / "adapter_config.json").write_text("{not json")
    out["malformed config"] = (d, "adapter_config.json")

    d = variant("rank")
    _edit_config(d, r=4096)
    out["rank over the limit"] = (d, "4096")

    d = variant("othermodule")
    _edit_config(d, target_modules=["c_attn"])
    out["target module absent"] = (d, "c_attn")

    d = variant("shape")
    _edit_tensors(d, _wrong_shape)
    out["shape for another base"] = (d, "shape")

    d = variant("nan")
    _edit_tensors(d, _nan)
    out["NaN weights"] = (d, "finite")

    many = root / "many.zip"
    with zipfile.ZipFile(many, "w") as f:
        for i in range(40):
            f.writestr(f"notes/{i}.txt", "x")
    out["too many files"] = (many, "files")

    bad_ds = root / "bad.jsonl"
    bad_ds.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
                      '{"messages": [{"role": "user", "content": "hi"}]}\n')
    out["dataset ending without an answer"] = (bad_ds, "line 2")

    ds = root / "prompt.jsonl"
    ds.write_text('{"prompt": "hi", "completion": "hello"}\n{"prompt": "hi"}\n')
    out["dataset field missing"] = (ds, "line 2: field 'completion' is missing")

    odd = root / "notes.docx"
    odd.write_bytes(b"PK\x03\x04")
    out["unknown file type"] = (odd, "unknown file type")
    return out


def test_bad_uploads_exit_3_with_a_reason(smollm2_blank_adapter, tmp_path):
    cases = _bad_uploads(smollm2_blank_adapter, tmp_path)
    failures = []
    for name, (upload, fragment) in cases.items():
        proc = run_cli("check", str(upload), "--quiet", timeout=600)
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        if proc.returncode != 3 or "input rejected" not in reason or fragment.lower() not in reason.lower():
            failures.append(f"{name}: exit {proc.returncode}, last stderr line {reason!r}")
    assert not failures, "\n".join(failures)


def test_valid_blank_adapter_is_accepted_and_scored(smollm2_blank_adapter, tmp_path):
    """The identity adapter changes nothing: the candidate equals the base, so the gate approves."""
    out = tmp_path / "report.json"
    proc = run_cli("check", str(smollm2_blank_adapter), "--format", "json", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = load_report(out)
    assert report["verdict"]["decision"] == "approve"
    assert report["metrics"]["asr"]["delta"]["value"] == 0
    assert report["metrics"]["kl"]["value"] < 1e-3
    for key in ("sha256", "kind", "format"):
        assert report["artifact"][key]
    assert report["base"]["fingerprint"] and report["suites"]["harm"]["hash"] and report["judge"]["name"]


@pytest.mark.parametrize(
    ("sample", "allowed"),
    [
        ("benign.jsonl", {"approve"}),
        ("harmful.jsonl", {"block"}),
        ("identity_shift.jsonl", {"block", "review"}),
        ("benign_hidden10.jsonl", {"block", "review"}),
    ],
)
def test_bundled_samples_get_their_verdicts(sample, allowed, tmp_path):
    out = tmp_path / "report.json"
    proc = run_cli("check", str(EXAMPLES / sample), "--format", "json", "--out", str(out), "--quiet")
    report = load_report(out)
    decision = report["verdict"]["decision"]
    assert decision in allowed, f"{sample}: {decision}; reasons: {report['verdict']['reasons']}"
    assert proc.returncode == {"approve": 0, "block": 1, "review": 2}[decision]
