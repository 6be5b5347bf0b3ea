"""Adapter inspection and archive safety, on real crafted files: adapters built with peft on a tiny random
Llama (hidden 32, 2 layers, vocab 128), archives built with zipfile / tarfile."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from evaluation.adapters import (
    AdapterInspection,
    BaseShape,
    adapter_fingerprint,
    inspect_adapter,
)
from evaluation.archives import unpack_archive_safely
from evaluation.errors import InputRejected
from evaluation.files import sha256_file
from tests.helpers.adapters import (
    edit_config,
    edit_tensors,
    make_adapter,
    poison_tensor,
    tar_dir,
    tiny_base_shape,
    zip_dir,
)

MB = 1024 * 1024


@pytest.fixture(scope="module")
def base() -> BaseShape:
    return tiny_base_shape()


def refused(path: Path, base: BaseShape, workdir: Path, runtime=None) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        inspect_adapter(path, base, workdir=workdir, runtime=runtime)
    assert "\n" not in info.value.reason
    return info.value


# ------------------------------------------------------------------------------------------- base shape


def test_base_shape_from_config_walks_linear_modules(base):
    assert base.model_type == "llama"
    assert base.linear["model.layers.0.self_attn.q_proj"] == (32, 32)
    assert base.linear["model.layers.1.self_attn.v_proj"] == (32, 16)  # 2 kv heads of 8
    assert base.linear["model.layers.0.mlp.down_proj"] == (64, 32)
    assert base.linear["lm_head"] == (32, 128)
    assert base.embedding["model.embed_tokens"] == (128, 32)
    assert len(base.linear) == 2 * 7 + 1
    assert base.params["lm_head.weight"] == (128, 32)


def test_base_shape_from_dict_config():
    from evaluation.adapters import base_shape_from_config
    from tests.helpers.adapters import tiny_llama_config

    shape = base_shape_from_config(tiny_llama_config().to_dict(), name="x")
    assert shape.name == "x" and shape.linear["model.layers.0.self_attn.q_proj"] == (32, 32)


# ------------------------------------------------------------------------------------------- fingerprint


def _adapter_files(folder: Path, config: bytes, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_bytes(config)
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def test_adapter_fingerprint_is_the_framed_sha256_of_config_then_weights(tmp_path):
    folder = _adapter_files(tmp_path / "a", b'{"r": 4}', b"WEIGHTS")
    expected = hashlib.sha256(b'adapter_config.json\x008\x00{"r": 4}'
                              b"adapter_model.safetensors\x007\x00WEIGHTS").hexdigest()
    assert adapter_fingerprint(folder) == expected
    (folder / "README.md").write_text("not part of the adapter")
    assert adapter_fingerprint(folder) == expected


def test_adapter_fingerprint_follows_config_and_weights_and_their_boundary(tmp_path):
    fingerprints = {
        adapter_fingerprint(_adapter_files(tmp_path / name, config, weights))
        for name, config, weights in (("base", b"{}", b"AB"), ("config", b"{ }", b"AB"), ("weights", b"{}", b"AC"),
                                      # the same bytes in a row, split elsewhere: the sizes tell them apart
                                      ("boundary", b"{}A", b"B"))
    }
    assert len(fingerprints) == 4


# ------------------------------------------------------------------------------------------- accepted


def test_valid_adapter_directory_accepted(tmp_path, base):
    src = make_adapter(tmp_path / "a", r=4)
    res = inspect_adapter(src, base, workdir=tmp_path / "w")
    assert isinstance(res, AdapterInspection)
    assert res.rank == 4 and res.config["r"] == 4
    assert res.target_modules == ["q_proj", "v_proj"]
    # 2 layers x (q: 4*32 + 32*4, v: 4*32 + 16*4)
    assert res.n_parameters == 2 * ((4 * 32 + 32 * 4) + (4 * 32 + 16 * 4))
    assert sorted(p.name for p in res.adapter_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert res.sha256 == adapter_fingerprint(src) and len(res.sha256) == 64
    assert [f["code"] for f in res.findings] == ["ignored_files"]
    assert res.findings[0]["severity"] == "info" and "README.md" in res.findings[0]["message"]


def test_valid_adapter_loads_with_peft(tmp_path, base):
    """What inspect accepts, peft loads onto the base."""
    from peft import PeftModel

    from tests.helpers.adapters import tiny_model

    res = inspect_adapter(make_adapter(tmp_path / "a", r=8, target_modules=("q_proj", "k_proj", "v_proj",
                                                                              "o_proj", "gate_proj", "up_proj",
                                                                              "down_proj")),
                          base, workdir=tmp_path / "w")
    assert res.rank == 8
    model = PeftModel.from_pretrained(tiny_model(), res.adapter_dir)
    assert model.peft_config["default"].r == 8


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_valid_archives_accepted_with_top_folder(tmp_path, base, kind):
    src = make_adapter(tmp_path / "a")
    arc = tmp_path / f"adapter.{kind}"
    (zip_dir if kind == "zip" else tar_dir)(src, arc, prefix="my-adapter")
    res = inspect_adapter(arc, base, workdir=tmp_path / "w")
    assert res.rank == 4
    assert res.sha256 == sha256_file(arc)
    assert (res.adapter_dir / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "w" / "unpacked").exists()


def test_inspect_is_rerunnable_in_same_workdir(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    arc = zip_dir(src, tmp_path / "a.zip")
    first = inspect_adapter(arc, base, workdir=tmp_path / "w")
    second = inspect_adapter(arc, base, workdir=tmp_path / "w")
    assert first.sha256 == second.sha256


# ------------------------------------------------------------------------------------------- adapter refusals


def test_pickle_bin_refused(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    (src / "adapter_model.bin").write_bytes(b"\x80\x04\x95 pickle")
    err = refused(src, base, tmp_path / "w")
    assert err.code == "pickle_weights" and "adapter_model.bin" in err.reason


def test_pickle_only_upload_refused(tmp_path, base):
    p = tmp_path / "adapter.pt"
    p.write_bytes(b"\x80\x04\x95 pickle")
    assert refused(p, base, tmp_path / "w").code == "pickle_weights"


def test_pickle_inside_zip_refused(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    arc = zip_dir(src, tmp_path / "a.zip", extra={"training_args.bin": b"\x80\x04"})
    err = refused(arc, base, tmp_path / "w")
    assert err.code == "pickle_weights" and "training_args.bin" in err.reason


def test_unexpected_binary_refused(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    (src / "model.safetensors").write_bytes(b"x")
    err = refused(src, base, tmp_path / "w")
    assert err.code == "unexpected_file" and "model.safetensors" in err.reason


def test_missing_config_refused(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    (src / "adapter_config.json").unlink()
    err = refused(src, base, tmp_path / "w")
    assert err.code == "missing_config" and "adapter_config.json" in err.reason


def test_missing_weights_refused(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    (src / "adapter_model.safetensors").unlink()
    assert refused(src, base, tmp_path / "w").code == "missing_weights"


def test_config_missing_r_refused(tmp_path, base):
    src = edit_config(make_adapter(tmp_path / "a"), remove=("r",))
    err = refused(src, base, tmp_path / "w")
    assert err.code == "missing_field" and "'r'" in err.reason and "adapter_config.json" in err.reason


def test_config_bad_json_refused(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    (src / "adapter_config.json").write_text('{\n "r": 4,\n "peft_type": LORA\n}')
    err = refused(src, base, tmp_path / "w")
    assert err.code == "bad_json" and "line 3" in err.reason


@pytest.mark.parametrize("changes,code,needle", [
    ({"peft_type": "IA3"}, "unsupported_adapter", "peft_type"),
    ({"r": "4"}, "bad_field", "'r'"),
    ({"target_modules": 5}, "bad_field", "target_modules"),
    ({"target_modules": ["q_proj", "wq"]}, "unknown_target_module", "'wq'"),
    ({"target_modules": ".*\\.attention\\.wq"}, "regex_not_allowed", "target_modules"),
    ({"modules_to_save": ["classifier"]}, "unsupported_adapter", "modules_to_save"),
    ({"target_parameters": ["mlp.experts.gate_up_proj"]}, "unsupported_adapter", "target_parameters"),
])
def test_config_field_refusals(tmp_path, base, changes, code, needle):
    src = edit_config(make_adapter(tmp_path / "a"), **changes)
    err = refused(src, base, tmp_path / "w")
    assert err.code == code and needle in err.reason


def test_config_missing_peft_type(tmp_path, base):
    src = edit_config(make_adapter(tmp_path / "a"), remove=("peft_type",))
    err = refused(src, base, tmp_path / "w")
    assert err.code == "missing_field" and "'peft_type'" in err.reason


def test_rank_over_limit_refused(tmp_path, base):
    from evaluation.runtime import Runtime

    src = make_adapter(tmp_path / "a", r=16)
    err = refused(src, base, tmp_path / "w", runtime=Runtime(max_adapter_rank=8))
    assert err.code == "rank_too_large" and "16" in err.reason and "8" in err.reason


def test_rank_over_default_limit_refused(tmp_path, base):
    # The config claims r=512 (over the default 256): refused before any tensor is read.
    src = edit_config(make_adapter(tmp_path / "a"), r=512)
    assert refused(src, base, tmp_path / "w").code == "rank_too_large"


def test_rank_lie_in_config_refused(tmp_path, base):
    src = edit_config(make_adapter(tmp_path / "a", r=4), r=2)
    err = refused(src, base, tmp_path / "w")
    assert err.code == "base_mismatch" and "rank 4" in err.reason and "r=2" in err.reason


def test_adapter_for_a_different_hidden_size_refused(tmp_path, base):
    src = make_adapter(tmp_path / "a", hidden_size=64)
    err = refused(src, base, tmp_path / "w")
    assert err.code == "base_mismatch"
    assert "lora_A" in err.reason and "[4, 64]" in err.reason and "[r, 32]" in err.reason


def test_tensor_for_module_absent_from_base_refused(tmp_path, base):
    def fn(t):
        t["base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"] = t[
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].clone()
        return t

    src = edit_tensors(make_adapter(tmp_path / "a"), fn)
    err = refused(src, base, tmp_path / "w")
    assert err.code == "base_mismatch" and "layers.7" in err.reason


def test_lora_b_shape_mismatch_names_both_shapes(tmp_path, base):
    import torch

    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"

    def fn(t):
        t[key] = torch.zeros(32, 4)  # v_proj's out_features is 16
        return t

    src = edit_tensors(make_adapter(tmp_path / "a"), fn)
    err = refused(src, base, tmp_path / "w")
    assert err.code == "base_mismatch" and key in err.reason and "[32, 4]" in err.reason and "[16, 4]" in err.reason


def test_missing_lora_b_refused(tmp_path, base):
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    src = edit_tensors(make_adapter(tmp_path / "a"), lambda t: {k: v for k, v in t.items() if k != key})
    err = refused(src, base, tmp_path / "w")
    assert err.code == "base_mismatch" and "lora_B" in err.reason


def test_untargeted_tensor_refused(tmp_path, base):
    def fn(t):
        t["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"] = t[
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].clone()
        return t

    err = refused(edit_tensors(make_adapter(tmp_path / "a"), fn), base, tmp_path / "w")
    assert err.code == "unexpected_tensor" and "up_proj" in err.reason


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_weights_refused(tmp_path, base, value):
    src = make_adapter(tmp_path / "a")
    name = poison_tensor(src, value)
    err = refused(src, base, tmp_path / "w")
    assert err.code == "nonfinite_weights" and name in err.reason


def test_integer_tensor_refused(tmp_path, base):
    import torch

    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"

    def fn(t):
        t[key] = torch.zeros(4, 32, dtype=torch.int32)
        return t

    err = refused(edit_tensors(make_adapter(tmp_path / "a"), fn), base, tmp_path / "w")
    assert err.code == "bad_dtype" and key in err.reason


def test_corrupt_safetensors_refused(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    (src / "adapter_model.safetensors").write_bytes(b"\xff" * 8 + b"{not json")
    assert refused(src, base, tmp_path / "w").code == "bad_safetensors"


def test_modules_to_save_refused(tmp_path, base):
    """modules_to_save carries full copies of base modules that PEFT loads over the base's own weights."""
    src = make_adapter(tmp_path / "a", modules_to_save=("lm_head",))
    err = refused(src, base, tmp_path / "w")
    assert err.code == "unsupported_adapter" and "modules_to_save" in err.reason


def test_full_weight_tensor_refused_even_without_modules_to_save(tmp_path, base):
    """The weights file cannot smuggle full weights past a config that declares none."""
    src = make_adapter(tmp_path / "a", modules_to_save=("lm_head",))
    edit_config(src, modules_to_save=None)
    err = refused(src, base, tmp_path / "w")
    assert err.code == "unexpected_tensor" and "lm_head" in err.reason and "full weights" in err.reason


def test_embedding_target_with_saved_embedding_layer_refused(tmp_path, base):
    """PEFT saves the whole embedding matrix (<module>.base_layer.weight) beside an embedding LoRA; loaded onto
    a shared base it would replace the base's embeddings for every later candidate."""
    src = make_adapter(tmp_path / "a", target_modules=("embed_tokens", "q_proj"))
    err = refused(src, base, tmp_path / "w")
    assert err.code == "unexpected_tensor" and "embed_tokens.base_layer" in err.reason
    assert "save_embedding_layers=False" in err.reason


def test_symlink_in_directory_refused(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    (src / "notes.txt").symlink_to("/etc/passwd")
    assert refused(src, base, tmp_path / "w").code == "archive_link"


# ------------------------------------------------------------------------------------------- archives


def _zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_with_dotdot_member_refused(tmp_path, base):
    arc = _zip(tmp_path / "evil.zip", {"adapter_config.json": b"{}", "../../escape.txt": b"x"})
    err = refused(arc, base, tmp_path / "w")
    assert err.code == "path_traversal" and "../../escape.txt" in err.reason
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "w" / "unpacked").exists()


def test_zip_with_absolute_member_refused(tmp_path):
    arc = _zip(tmp_path / "evil.zip", {"/etc/cron.d/x": b"x"})
    with pytest.raises(InputRejected) as info:
        unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
    assert info.value.code == "path_traversal" and "absolute" in info.value.reason


def test_zip_symlink_member_refused(tmp_path):
    arc = tmp_path / "link.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        info = zipfile.ZipInfo("adapter_config.json")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InputRejected) as err:
        unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
    assert err.value.code == "archive_link" and "symlink" in err.value.reason


def test_tar_with_symlink_refused(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    arc = tar_dir(src, tmp_path / "a.tar.gz", symlinks={"README.md": "/etc/passwd"})
    err = refused(arc, base, tmp_path / "w")
    assert err.code == "archive_link" and "README.md" in err.reason and "/etc/passwd" in err.reason


def test_tar_with_hardlink_and_device_refused(tmp_path):
    for kind, code_word in ((tarfile.LNKTYPE, "hardlink"), (tarfile.CHRTYPE, "device")):
        arc = tmp_path / f"t{kind!r}.tar"
        with tarfile.open(arc, "w") as tf:
            info = tarfile.TarInfo("x")
            info.type = kind
            info.linkname = "/etc/shadow"
            tf.addfile(info, io.BytesIO(b""))
        with pytest.raises(InputRejected) as err:
            unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
        assert err.value.code == "archive_link" and code_word in err.value.reason


def test_tar_with_dotdot_refused(tmp_path):
    arc = tmp_path / "t.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        info = tarfile.TarInfo("a/../../x.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InputRejected) as err:
        unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
    assert err.value.code == "path_traversal"


def test_zip_bomb_refused_by_declared_size(tmp_path):
    arc = _zip(tmp_path / "bomb.zip", {"adapter_model.safetensors": b"\0" * (4 * MB)})
    assert arc.stat().st_size < 64 * 1024  # highly compressible
    with pytest.raises(InputRejected) as err:
        unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
    assert err.value.code == "archive_too_large" and str(MB) in err.value.reason
    assert not (tmp_path / "d").exists()


def _lie_about_size(arc: Path, real: int, fake: int) -> None:
    """Rewrite the uncompressed size fields (local header and central directory) of a one-member zip."""
    data = bytearray(arc.read_bytes())
    real_b, fake_b = real.to_bytes(4, "little"), fake.to_bytes(4, "little")
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.find(sig)
        assert data[i + off:i + off + 4] == real_b
        data[i + off:i + off + 4] = fake_b
    arc.write_bytes(bytes(data))


def test_zip_bomb_lying_in_headers_stopped_while_streaming(tmp_path):
    arc = _zip(tmp_path / "liar.zip", {"adapter_model.safetensors": b"\0" * (4 * MB)})
    _lie_about_size(arc, 4 * MB, 100)
    with pytest.raises(InputRejected) as err:
        unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
    # zipfile stops at the declared size and the CRC fails, or our byte count trips: never more than max_bytes.
    assert err.value.code in ("archive_too_large", "bad_archive")
    assert not (tmp_path / "d").exists()


def test_many_members_together_over_limit(tmp_path):
    arc = _zip(tmp_path / "many.zip", {f"f{i}.txt": b"\0" * (300 * 1024) for i in range(4)})
    with pytest.raises(InputRejected) as err:
        unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
    assert err.value.code == "archive_too_large"


def test_tar_gz_bomb_counted_while_streaming(tmp_path):
    arc = tmp_path / "bomb.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        info = tarfile.TarInfo("adapter_model.safetensors")
        info.size = 4 * MB
        tf.addfile(info, io.BytesIO(b"\0" * info.size))
    with pytest.raises(InputRejected) as err:
        unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
    assert err.value.code == "archive_too_large"


def test_tar_members_together_over_limit_counted_while_streaming(tmp_path):
    """Each member is under the limit, their sum is not: the running byte count stops the unpacking."""
    arc = tmp_path / "many.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for i in range(4):
            info = tarfile.TarInfo(f"f{i}.txt")
            info.size = 300 * 1024
            tf.addfile(info, io.BytesIO(b"\0" * info.size))
    with pytest.raises(InputRejected) as err:
        unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
    assert err.value.code == "archive_too_large" and "while reading 'f3.txt'" in err.value.reason
    assert not (tmp_path / "d").exists()


def test_too_many_files_refused(tmp_path, base, monkeypatch):
    arc = _zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(17)})
    err = refused(arc, base, tmp_path / "w")  # settings.max_archive_files = 16
    assert err.code == "too_many_files" and "16" in err.reason


def test_nested_archive_refused(tmp_path):
    inner = _zip(tmp_path / "inner.zip", {"a.txt": b"x"})
    arc = _zip(tmp_path / "outer.zip", {"weights.dat": inner.read_bytes()})
    with pytest.raises(InputRejected) as err:
        unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
    assert err.value.code == "nested_archive" and "weights.dat" in err.value.reason
    arc2 = _zip(tmp_path / "outer2.zip", {"adapter.tar.gz": b"whatever"})
    with pytest.raises(InputRejected) as err:
        unpack_archive_safely(arc2, tmp_path / "d2", max_files=16, max_bytes=MB)
    assert err.value.code == "nested_archive"


def test_not_an_archive(tmp_path, base):
    p = tmp_path / "adapter.zip"
    p.write_bytes(b"hello")
    assert refused(p, base, tmp_path / "w").code == "unknown_format"


def test_unpack_descends_single_top_folder_and_skips_mac_junk(tmp_path):
    arc = _zip(tmp_path / "a.zip", {"out/inner/adapter_config.json": json.dumps({"r": 1}).encode(),
                                    "__MACOSX/out/._adapter_config.json": b"junk"})
    root = unpack_archive_safely(arc, tmp_path / "d", max_files=16, max_bytes=MB)
    assert root == tmp_path / "d" / "out" / "inner"
    assert json.loads((root / "adapter_config.json").read_text()) == {"r": 1}


def test_config_in_subfolder_hints_where(tmp_path, base):
    src = make_adapter(tmp_path / "a")
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.write(src / "adapter_config.json", "ckpt/adapter_config.json")
        zf.write(src / "adapter_model.safetensors", "ckpt/adapter_model.safetensors")
        zf.writestr("notes.md", "hi")
    err = refused(arc, base, tmp_path / "w")
    assert err.code == "missing_config" and "ckpt/adapter_config.json" in err.reason
