"""Shared fixtures: a micro demo data set and a micro bundle trained from it, built once per run.

The bundle uses the `test-micro` config (a 1-layer ViT on 32-pixel images, a 1-layer Mistral of
width 128): every stage of `rrg train` runs for real, in seconds. Its drafts are not meant to be
good; tests that need a model that knows a finding train their own, on purpose.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from rrg.config import load_model_config, with_ablation
from rrg.data.datasets import packaged_iu_annotation, read_r2gen_annotation
from rrg.demo.data import DemoConfig, build_demo
from rrg.training.train import train_bundle

MICRO_STUDIES = {"train": 32, "val": 8, "test": 8}


def micro_annotation() -> dict[str, list[dict]]:
    """A few real IU reports per split (the first of each), for a fast data set."""
    annotation = read_r2gen_annotation(packaged_iu_annotation())
    train, val = annotation["train"], annotation["val"]
    return {
        "train": train[: MICRO_STUDIES["train"]],
        "val": train[MICRO_STUDIES["train"] : MICRO_STUDIES["train"] + MICRO_STUDIES["val"]],
        "test": val[: MICRO_STUDIES["test"]],
    }


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("micro-data")
    annotation = folder / "annotation.json"
    annotation.write_text(json.dumps(micro_annotation()))
    out = folder / "set"
    build_demo(DemoConfig(out=out, annotation=annotation, image_size=64, workers=1), progress=False)
    return out


@pytest.fixture(scope="session")
def micro_bundle(micro_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("micro-bundle") / "bundle"
    train_bundle(micro_data, out, load_model_config("test-micro"), progress=False, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def micro_hyperbolic_bundle(micro_data, tmp_path_factory) -> Path:
    """The micro bundle with REVTAF's hyperbolic retrieval (a small LRE, one language epoch), its
    towers pre-trained by MedFuse-CLIP first."""
    out = tmp_path_factory.mktemp("micro-hyperbolic") / "bundle"
    config = load_model_config("test-micro").replace(
        vision={"open_clip_model": "rrg-vit-micro-clip"},  # a text tower with open_clip's whole BPE vocabulary
        retrieval={"kind": "hyperbolic", "hidden": 32, "dim": 16},
        training={"retriever_epochs": 4, "retriever_batch": 8, "lm_epochs": 1, "clip_epochs": 2, "clip_pca_dim": 4},
    )
    train_bundle(micro_data, out, config, progress=False, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def micro_fused_bundle(micro_data, tmp_path_factory) -> Path:
    """The micro bundle with the whole method (`--ablation full`): LRE retrieval, Sinkhorn fusion of
    the reference sentences and entity triplets (MiniLM encodings), and disease clues."""
    out = tmp_path_factory.mktemp("micro-fused") / "bundle"
    config = with_ablation(load_model_config("test-micro"), "full").replace(
        retrieval={"hidden": 32, "dim": 16},
        fusion={"dim": 16},
        clues={"dim": 16, "heads": 2, "queries": 2},
        training={"retriever_epochs": 2, "retriever_batch": 8, "lm_epochs": 1},
    )
    train_bundle(micro_data, out, config, progress=False, log=lambda _: None)
    return out


TINY_BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                   "the", "left", "right", "small", "pleural", "effusion", "heart", "is", "no"]


def write_tiny_bert(folder: Path, hidden: int = 32) -> Path:
    """A random 2-layer BERT in Hugging Face format (config.json, model.safetensors, vocab.txt): a
    text encoder in the layout of Bio_ClinicalBERT or CXR-BERT, small enough for any test."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(TINY_BERT_VOCAB) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(TINY_BERT_VOCAB), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert():
    """`write_tiny_bert` for tests: (folder, hidden) -> the folder."""
    return write_tiny_bert


def dicom_of(
    pixels: np.ndarray,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-0042",
    photometric: str = "MONOCHROME2",
    window: tuple[int, int] | None = None,
) -> bytes:
    """A 12-bit DX DICOM of grayscale pixels in [0, 1], with patient tags that must never leak.

    photometric: MONOCHROME1 stores the inverse, as some modalities write it; window: (centre, width).
    """
    stored = (pixels * 4095).round().astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def make_dicom():
    """`dicom_of` for tests: pixels in [0, 1] to DICOM bytes."""
    return dicom_of


@pytest.fixture(scope="session")
def patch_png_size():
    """Rewrite a PNG's IHDR width/height (and its CRC) without touching the pixel stream."""

    def patch(data: bytes, width: int, height: int) -> bytes:
        ihdr = bytearray(data[16:29])  # 8 signature + 4 length + 4 "IHDR", then 13 bytes of IHDR data
        ihdr[0:8] = struct.pack(">II", width, height)
        crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
        return data[:16] + bytes(ihdr) + crc + data[33:]

    return patch
