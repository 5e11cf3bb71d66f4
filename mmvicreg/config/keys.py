"""What every config key means and which values it allows: the words of ``docs/CONFIG.md`` and of the errors.

:data:`KEY_HELP` gives one line per key of the typed schema (:mod:`mmvicreg.config.schema`; a branch's keys under
``branches.<name>``), :data:`KEY_CHOICES` the allowed values of the keys that take a name (the sections check
their values against it when they are made), :data:`DATA_KEY_HELP` one line per option of a ``data.*`` section
and :data:`DATA_FORMAT_KEYS` the options each ``format`` takes (the data builders' signatures:
``tests/config/test_reference.py`` checks the two agree, and that every schema key has its line here).

Kept apart from the schema so that the dataclasses stay short and this leaf imports nothing but the choices.
"""

from __future__ import annotations

from typing import Iterable

from mmvicreg.choices import (
    ABLATIONS,
    AUGMENT_PLACES,
    DECODE_PLACES,
    BAD_DATA_POLICIES,
    COVARIANCE_ALGORITHMS,
    DATA_FORMATS,
    EVAL_PRECISIONS,
    EXPANDER_NORMS,
    INTERPOLATIONS,
    MIXED_PRECISION,
    NONFINITE_POLICIES,
    OBJECTIVE_CLASSES,
    OPTIMIZERS,
    PAIRS_MODES,
    RETRIEVAL_INDEXES,
    RETRIEVAL_PROTOCOLS,
    TRANSFORMS,
    VCREG_FORMS,
    VCREG_SPATIAL,
)

KEY_CHOICES: dict[str, Iterable[str]] = {
    "loss.name": OBJECTIVE_CLASSES,  # the live registry: an objective registered later is a name too
    "loss.covariance": COVARIANCE_ALGORITHMS,
    "loss.ablation": ABLATIONS,
    "loss.vcreg_spatial": VCREG_SPATIAL,
    "loss.vcreg_form": VCREG_FORMS,
    "train.optimizer.name": OPTIMIZERS,
    "train.mixed_precision": MIXED_PRECISION,
    "train.on_nonfinite": NONFINITE_POLICIES,
    "eval.protocol": RETRIEVAL_PROTOCOLS,
    "eval.precision": EVAL_PRECISIONS,
    "eval.index_kind": RETRIEVAL_INDEXES,
    "eval.decode_on": DECODE_PLACES,
    "branches.NAME.expander_norm": EXPANDER_NORMS,
    "branches.NAME.transform.train": TRANSFORMS,
    "branches.NAME.transform.eval": TRANSFORMS,
    "branches.NAME.transform.interpolation": INTERPOLATIONS,
    "branches.NAME.transform.augment_on": AUGMENT_PLACES,
    "data.decode_on": DECODE_PLACES,
    "data.*.format": DATA_FORMATS,
    "data.*.pairs": PAIRS_MODES,
    "data.*.on_bad_image": BAD_DATA_POLICIES,
    "data.*.on_bad_caption": BAD_DATA_POLICIES,
}

KEY_HELP: dict[str, str] = {
    "output_dir": "the run's folder: config.yaml, checkpoints/, metrics.jsonl, model/, eval.json",
    "resume": "continue the run in output_dir (or train.sync_to) from its last checkpoint (the settings must "
              "match); with no checkpoint yet the run starts, so a job script may always set it",
    "overwrite": "replace an earlier run in output_dir (its own files only) and start afresh",
    "branches": "the encoders, one section per branch name (keys below, under branches.NAME)",
    "loss.name": "the objective: VICReg, a baseline under the same trainer, or supervised (cross-entropy of a "
                 "linear head on one image branch's representation; labelled data.train)",
    "loss.invariance_weight": "λ, the weight of the invariance (mean squared distance) term",
    "loss.variance_weight": "μ, the weight of the variance hinge (per branch: branches.NAME.variance_weight)",
    "loss.covariance_weight": "ν, the weight of the off-diagonal covariance term (per branch too)",
    "loss.gamma": "γ, the target standard deviation of every embedding dimension",
    "loss.eps": "ε inside the variance term's square root",
    "loss.covariance": "how the covariance term is computed: the d×d matrix (dense), the n×n Gram form, or auto",
    "loss.pairs": "the branch pairs the invariance term joins, [[a, b], ...] (default: every pair)",
    "loss.ablation": "vicreg only: drop terms as in the paper's ablation (null: full)",
    "loss.temperature": "infonce: the initial temperature",
    "loss.learn_temperature": "infonce: learn the temperature (CLIP) or keep it fixed",
    "loss.margin": "triplet: the hinge margin (VSE++)",
    "loss.max_violation": "triplet: the hardest negative (VSE++) rather than the sum over negatives",
    "loss.barlow_lambda": "barlow: the weight of the off-diagonal cross-correlation terms",
    "loss.vcreg_layers": "VCReg: dotted module names whose outputs get the variance and covariance terms; blocks: "
                         "every block of every encoder (the paper's placement)",
    "loss.vcreg_variance_weight": "VCReg: the variance weight on those layers (μ; the paper's α; not a published value)",
    "loss.vcreg_covariance_weight": "VCReg: the covariance weight on those layers (ν; the paper's β; not a published "
                                    "value)",
    "loss.vcreg_spatial": "VCReg: a feature map's samples: every location, the pooled map, or the flattened map",
    "loss.vcreg_form": "VCReg: vicreg (VICReg's terms, μ/d and ν/d) or paper (the VCReg paper's normalisation, "
                       "β(m-1)/(d(d-1)) and a SmoothL1 covariance)",
    "loss.vcreg_fast": "VCReg: the paper's fast path, the penalty's gradient written by hand (same value and "
                       "gradient, less memory; not with vcreg_spatial: pool)",
    "data.train": "the training data section: format and its options (see Data formats below)",
    "data.eval": "the evaluation data section, scored at the end of the run (null: none)",
    "data.workers": "DataLoader processes that decode and preprocess (0: in the training process)",
    "data.pin_memory": "page-locked batches, copied to the GPU without blocking; null: on when training on CUDA",
    "data.decode_on": "where JPEGs decode: in the loader workers, or on the device (the workers draw the crop; "
                      "torchvision's batched decode_jpeg, nvJPEG on CUDA, in the training process on a CPU); "
                      "device needs augment_on: device for VICReg views",
    "train.channels_last": "convolutional image towers in channels-last (NHWC) layout; null: on when training on CUDA",
    "train.compile": "torch.compile each branch's encoder and expander (the objective stays eager); graph breaks logged once",
    "train.deterministic": "torch.use_deterministic_algorithms (warn only): bit-identical reruns; null: on with train.compile",
    "train.tf32": "TensorFloat-32 matrix products for float32 work on CUDA (faster; 10-bit mantissa products)",
    "train.optimizer.fused": "adamw, sgd: the fused one-kernel step; null: fused on CUDA (LARS has none)",
    "train.batch_size": "the global batch: every process's samples together (the loss sees it whole)",
    "train.micro_batch_size": "run each process's batch in chunks of this size; the step is exactly the same",
    "train.epochs": "passes over the training data",
    "train.samples_per_epoch": "streamed data: an epoch is this many samples (open_clip's)",
    "train.max_steps": "stop after this many optimiser steps (null: after train.epochs)",
    "train.checkpoint_every": "save a resumable checkpoint every this many steps",
    "train.seed": "seeds the model's init, the data order and the augmentations",
    "train.optimizer.name": "the optimiser (lars as published for ImageNet; adamw for the towers)",
    "train.optimizer.lr": "the absolute learning rate; null: base_lr × batch_size / 256",
    "train.optimizer.base_lr": "the learning rate per 256 samples (used when lr is null)",
    "train.optimizer.weight_decay": "weight decay (lars: not on biases and norms)",
    "train.optimizer.momentum": "lars and sgd: momentum",
    "train.optimizer.eta": "lars: the trust coefficient η (published: 0.001)",
    "train.optimizer.betas": "adamw: β1, β2",
    "train.warmup_steps": "linear warm-up steps (null: from warmup_epochs)",
    "train.warmup_epochs": "linear warm-up in epochs (published ImageNet: 10)",
    "train.min_lr_ratio": "the cosine schedule ends at lr × this",
    "train.grad_clip": "clip the gradient norm to this (null: no clipping)",
    "train.mixed_precision": "autocast precision; null: what Accelerate was told (its flag, env or config file)",
    "train.cpu": "run on the CPU even where a GPU is present",
    "train.log_every": "write metrics.jsonl (and the trackers) every this many steps",
    "train.rankme_every": "measure the embeddings' RankMe every this many steps",
    "train.eval_every": "evaluate on data.eval every this many steps (null: at the end only)",
    "train.on_nonfinite": "a NaN/inf loss stops the run, or skips the batch",
    "train.max_consecutive_skips": "with skip: this many non-finite batches in a row stop the run",
    "train.trackers": "experiment trackers by Accelerate's names (tensorboard, wandb, mlflow, ...)",
    "train.project": "the trackers' project (wandb project, mlflow experiment, tensorboard folder)",
    "train.run_name": "the run's name in the trackers (null: output_dir's folder name)",
    "train.tracker_init": "per tracker, the options of its init ({wandb: {entity: ...}})",
    "train.progress": "show a progress bar",
    "train.keep_checkpoints": "how many recent checkpoints to keep (here and at train.sync_to)",
    "train.sync_to": "an fsspec URL (s3://, gs://, file://...) the checkpoints, export and records are mirrored "
                     "to; resume=true reads the newest checkpoint back from there (null: local only)",
    "train.dist_timeout": "seconds a process waits for the others, at the rendezvous and in every collective "
                          "(null: torch's default, 30 min)",
    "train.requeue": "after a stop signal's checkpoint, run `scontrol requeue $SLURM_JOB_ID` (when it is set)",
    "eval.batch_size": "items per encoding batch",
    "eval.protocol": "retrieval: the whole set (5k) or five folds averaged (1k)",
    "eval.branches": "retrieval: [image branch, text branch]; k-NN: the branches to score (null: the first/all)",
    "eval.captions_per_image": "retrieval: captions kept per image",
    "eval.device": "cpu, cuda or cuda:N (null: the training device)",
    "eval.precision": "encoding autocast: auto is bf16 on CUDA, fp32 on the CPU",
    "eval.workers": "DataLoader processes for decoding (null: data.workers)",
    "eval.decode_on": "where evaluation's JPEGs decode: workers or device (null: data.decode_on)",
    "eval.index_kind": "retrieval ranks: exact, or a FAISS index kind (flat is exact too; ivf, hnsw approximate)",
    "eval.index_options": "FAISS options: hnsw m, ef_construction, ef_search; ivf nlist, nprobe",
    "eval.reference": "a labelled data section: the k-NN / linear memory (null: data.train)",
    "branches.NAME.encoder": "a name (resnet50, gru, hf, open_clip:ViT-B-32, any timm name) or {name, options}",
    "branches.NAME.expander": "the expander's widths, e.g. 8192-8192-8192 (published), or none",
    "branches.NAME.expander_norm": "the expander's hidden normalisation (published: batch)",
    "branches.NAME.field": "the sample field this branch reads (default: image for image encoders, else caption)",
    "branches.NAME.shares": "reuse the named branch's encoder (siamese, same weights)",
    "branches.NAME.transform": "an image branch's preprocessing (keys below; left out: the weights', then defaults)",
    "branches.NAME.gradient_checkpointing": "recompute the encoder's activations in backward (less memory)",
    "branches.NAME.freeze": "keep the encoder's weights and normalisation statistics as built (open_clip's lock)",
    "branches.NAME.unfreeze_last": "with freeze: the encoder's last N layer groups still train",
    "branches.NAME.variance_weight": "this branch's μ (null: loss.variance_weight)",
    "branches.NAME.covariance_weight": "this branch's ν (null: loss.covariance_weight)",
    "branches.NAME.gamma": "this branch's γ (null: loss.gamma)",
    "branches.NAME.transform.train": "the training transform: a VICReg view (1 or 2), light, or eval",
    "branches.NAME.transform.eval": "the evaluation transform",
    "branches.NAME.transform.size": "the side in pixels",
    "branches.NAME.transform.mean": "per-channel normalisation mean (3 numbers)",
    "branches.NAME.transform.std": "per-channel normalisation standard deviation (3 numbers)",
    "branches.NAME.transform.interpolation": "resize interpolation (torchvision's names)",
    "branches.NAME.transform.crop_pct": "the evaluation centre crop's share of the resized side, in (0, 1]",
    "branches.NAME.transform.augment_on": "where a VICReg view's colour half runs: loader workers or the device",
}

DATA_KEY_HELP: dict[str, str] = {
    "format": "the source's format",
    "split": "the split to read (default: train for data.train, else the evaluation split)",
    "captions": "the caption file: COCO/Karpathy JSON, CSV/TSV ({split} is filled with the split)",
    "images": "the image folder (folder: class subfolders; hf: the folder of relative image paths)",
    "root": "coco: the COCO folder (annotations/captions_<split><year>.json and <split><year>/)",
    "year": "coco: the release year with root",
    "pairs": "one sample per image (a caption drawn each epoch) or one per image–caption pair",
    "on_bad_image": "an unreadable image stops the run, or is skipped and counted",
    "on_bad_caption": "an empty or non-text caption stops the run, or is skipped and counted",
    "verify": "decode every image once before training (finds bad files up front)",
    "include_restval": "karpathy: the train split includes restval (as the literature's 113K)",
    "image_column": "the column holding the image path (csv) or image (hf)",
    "caption_column": "the column holding the caption (hf: null makes an image-only source)",
    "sep": "csv: the field separator (default: sniffed; tab for .tsv)",
    "path": "hf: the dataset: a save_to_disk folder, parquet files, or a Hub name (opt-in network)",
    "hf_split": "hf: the dataset's split name (default: the split)",
    "label_column": "hf image-only: the column holding the class label",
    "group_by": "hf: the column grouping an image's captions (auto: the image column)",
    "data_files": "hf: data files passed to datasets.load_dataset",
    "cache_dir": "where a dataset or the generated scenes are cached",
    "streaming": "read the data as a stream (hf parquet; webdataset: default on for train)",
    "shuffle_buffer": "streamed data: the shuffle buffer's size in samples",
    "extensions": "folder: the image file extensions read",
    "size": "digits/shapes/scenes: the side of the generated images in pixels",
    "test_fraction": "digits: the share of images held out as the test split",
    "seed": "digits/shapes/scenes: the seed of the split or the generated scenes",
    "labels": "digits: give the labels (false: withheld)",
    "classes": "folder/digits/hf image-only: keep only these classes (names, relabelled 0..k-1 in this order)",
    "num_images": "shapes/scenes/shape_objects: how many images (default: the split's standard size)",
    "shards": "webdataset: a folder, a .txt list, a brace pattern or a list of shards (local files or URLs)",
    "resample": "webdataset: draw shards with replacement (endless; for many nodes)",
    "allow_pipe": "webdataset: read pipe: shards written in shards itself (they run a shell command)",
}

# keys renamed to the command line's words (--index-kind): old dotted key -> new; the old one is refused by name
RENAMED_KEYS = {"eval.index": "eval.index_kind"}

_CAPTIONED = ("captions", "images", "pairs", "on_bad_image", "on_bad_caption", "verify")
DATA_FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "coco": ("split", *_CAPTIONED, "root", "year"),
    "karpathy": ("split", *_CAPTIONED, "include_restval"),
    "csv": ("split", *_CAPTIONED, "image_column", "caption_column", "sep"),
    "hf": ("split", "path", "images", "hf_split", "image_column", "caption_column", "label_column", "group_by",
           "data_files", "cache_dir", "pairs", "on_bad_image", "on_bad_caption", "verify", "streaming",
           "shuffle_buffer", "classes"),
    "folder": ("split", "images", "on_bad_image", "verify", "extensions", "classes"),
    "digits": ("split", "size", "test_fraction", "seed", "labels", "classes"),
    "shapes": ("split", "num_images", "size", "seed", "pairs", "cache_dir"),
    "scenes": ("split", "num_images", "size", "seed", "pairs", "cache_dir"),
    "shape_objects": ("split", "num_images", "size", "seed"),
    "webdataset": ("split", "shards", "shuffle_buffer", "on_bad_image", "on_bad_caption", "streaming", "resample",
                   "allow_pipe"),
}
if tuple(DATA_FORMAT_KEYS) != DATA_FORMATS:  # one list of formats
    raise RuntimeError(f"DATA_FORMAT_KEYS {tuple(DATA_FORMAT_KEYS)} do not match DATA_FORMATS {DATA_FORMATS}")


def data_format_keys(format: str) -> set[str] | None:
    """The option names ``format`` accepts (``split`` included), or None for an unknown format: the config's
    check of a ``data.*`` section, answered without importing the data package."""
    keys = DATA_FORMAT_KEYS.get(format)
    return None if keys is None else set(keys)
