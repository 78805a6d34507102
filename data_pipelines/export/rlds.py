"""Export the corpus as an RLDS dataset (Octo, OpenVLA) through tensorflow-datasets, in the
`array_record` file format, without TensorFlow.

    python data_pipelines/export/rlds.py --shards SHARDS --out DIR [--raw RAW]
        [--views stereo_left] [--size 320x240] [--jpeg-quality 90] [--split all|...]
        [--chunk 16] [--step 1] [--rotation rotvec|rot6d] [--fingers all|tips]
        [--task-index I --task-count N] [--merge-only] [--quiet]

One TFDS episode per corpus episode, one TFDS split per corpus split (train, val, test: the
corpus' session splits), written by a `tfds.core.GeneratorBasedBuilder` (`XperienceHands`)
with `file_format="array_record"` (tensorflow-datasets writes array_record and reads it back
with `as_data_source()` / `tfds.data_source` with no TensorFlow installed). Each episode:

  steps (a tfds Dataset, one step per exported frame, every --step corpus frames):
    observation: <view>: the frame as encoded JPEG bytes (tfds Image, encoding jpeg) of each
                 --views view at --size; state (float32): both hands and the head pose;
                 state_mask (bool: left, right, head)
    action (float32): the hand action space (xefm_jax/data/actions.py), step t -> t + 1;
    action_mask (bool: left, right; the last step's is False)
    language_instruction: the current subtask, else the current action class, else unknown
    is_first, is_last, is_terminal (the last step: the demonstration ends), reward (1.0 on
    the last step, else 0: a completed human demonstration), discount (1.0)
  episode_metadata: file_path (the episode folder relative to the raw root), episode_id,
    session, split, task (the main task), video_errors (views read as black frames: missing,
    short or damaged files; empty when none)

Layout: DIR/xperience_hands/1.0.0/ (dataset_info.json, features.json, and
xperience_hands-<split>.array_record-<i>-of-<n> shards) beside action_space.json,
normalization_stats.json (train only), retargeting_report.json and rlds_manifest.json.

Array jobs: task i of n builds the episodes i, i + n, ... as a TFDS dataset of its own under
DIR/parts/rlds/task-i-of-n/ (TFDS writes it under a temporary name and renames it, so a
finished part is complete and a re-run reuses it); whichever task finds every part done
merges them: each part's shard of a split becomes shard j of that split (hard links) and the
merged dataset_info.json lists their lengths; the merged folder appears by a rename.

TFRecord for Octo / OpenVLA: where TensorFlow is installed,
`tfds convert_format --dataset_dir DIR/xperience_hands/1.0.0 --out_file_format tfrecord
--out_dir OUT/xperience_hands/1.0.0`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import pathlib
import shutil
import sys
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from data_pipelines.export import common
from xefm_jax.data import actions as actions_lib
from xefm_jax.data import source as source_lib
from xefm_jax.data import xperience

NAME, DATASET_VERSION = "xperience_hands", "1.0.0"
MANIFEST = "rlds_manifest.json"


@dataclasses.dataclass(frozen=True)
class Options(common.PolicyOptions):
  jpeg_quality: int = 90


def jpeg(rgb: np.ndarray, quality: int) -> bytes:
  buf = io.BytesIO()
  PIL.Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


class XperienceHands(tfds.core.GeneratorBasedBuilder):
  """RLDS episodes of a shard corpus (module docstring); `episodes`: the corpus episode
  indices this builder writes (an array task's share)."""

  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {DATASET_VERSION: f"Hand action space {actions_lib.VERSION}."}

  def __init__(self, *, corpus: source_lib.Corpus, raw: pathlib.Path, opts: Options,
               episodes: Sequence[int], **kwargs):
    self.corpus, self.raw, self.opts, self.episodes = corpus, raw, opts, list(episodes)
    self.space = opts.space(corpus.options.fps)
    super().__init__(file_format="array_record", **kwargs)

  @classmethod
  def _get_pkg_dir_path(cls):
    return pathlib.Path(__file__).parent  # never a checksums folder: nothing is downloaded

  def _info(self) -> tfds.core.DatasetInfo:
    w, h = self.opts.size
    s = self.space
    images = {v: tfds.features.Image(shape=(h, w, 3), encoding_format="jpeg",
                                     doc=f"{v} at {w}x{h}") for v in self.opts.views}
    return tfds.core.DatasetInfo(
        builder=self,
        description="Xperience-10M egocentric human-hand episodes in RLDS (xefm_jax).",
        features=tfds.features.FeaturesDict({
            "steps": tfds.features.Dataset({
                "observation": tfds.features.FeaturesDict({
                    **images,
                    "state": tfds.features.Tensor(shape=(s.state_dim,), dtype=np.float32,
                                                  doc=", ".join(s.state_names())),
                    "state_mask": tfds.features.Tensor(shape=(3,), dtype=np.bool_)}),
                "action": tfds.features.Tensor(shape=(s.action_dim,), dtype=np.float32,
                                               doc=", ".join(s.action_names())),
                "action_mask": tfds.features.Tensor(shape=(2,), dtype=np.bool_),
                "language_instruction": tfds.features.Text(),
                "is_first": tfds.features.Scalar(dtype=np.bool_),
                "is_last": tfds.features.Scalar(dtype=np.bool_),
                "is_terminal": tfds.features.Scalar(dtype=np.bool_),
                "reward": tfds.features.Scalar(dtype=np.float32),
                "discount": tfds.features.Scalar(dtype=np.float32)}),
            "episode_metadata": tfds.features.FeaturesDict({
                "file_path": tfds.features.Text(), "episode_id": tfds.features.Text(),
                "session": tfds.features.Text(), "split": tfds.features.Text(),
                "task": tfds.features.Text(),
                "video_errors": tfds.features.Text(
                    doc="views that could not be read (black frames), empty if none")})}),
        supervised_keys=None)

  def _split_generators(self, dl_manager):
    del dl_manager
    splits: dict[str, list[int]] = {}
    for i in self.episodes:
      splits.setdefault(self.corpus.episodes[i]["split"], []).append(i)
    return {s: self._generate_examples(idx) for s, idx in splits.items()}

  def _generate_examples(self, indices: Sequence[int]) -> Iterator[tuple[str, dict]]:
    for i in indices:
      yield common.episode_key(self.corpus.episodes[i]["episode"]), self.episode(i)

  def episode(self, index: int) -> dict[str, Any]:
    ep = self.corpus.episodes[index]
    stored = self.corpus.read_episode(index, ("labels",) + actions_lib.EPISODE_ARRAYS)
    arr = actions_lib.episode_arrays(self.space, stored)
    n = len(arr["frame_index"])
    main, instr = common.frame_language(self.corpus.labels, stored, arr["frame_index"])
    w, h = self.opts.size
    views, errors = {}, []
    for v in self.opts.views:
      rgb, err = common.read_view(self.raw / ep["episode"] / f"{v}{xperience.VIDEO_SUFFIX}",
                                  (h, w), self.corpus.options.frame_stride * self.opts.step, n)
      views[v] = [jpeg(f, self.opts.jpeg_quality) for f in rgb]
      if err:
        errors.append(f"{v}: {err}")
    steps = [{
        "observation": {**{v: views[v][t] for v in views}, "state": arr["state"][t],
                        "state_mask": arr["state_mask"][t]},
        "action": arr["action"][t], "action_mask": arr["action_mask"][t],
        "language_instruction": instr[t], "is_first": t == 0, "is_last": t == n - 1,
        "is_terminal": t == n - 1, "reward": float(t == n - 1), "discount": 1.0}
        for t in range(n)]
    return {"steps": steps, "episode_metadata": {
        "file_path": ep["episode"], "episode_id": common.episode_key(ep["episode"]),
        "session": ep["session"], "split": ep["split"], "task": main[0],
        "video_errors": "; ".join(errors)}}


def part_dir(out: pathlib.Path, task: tuple[int, int]) -> pathlib.Path:
  return out / common.PARTS / "rlds" / f"task-{task[0]:05d}-of-{task[1]:05d}"


def dataset_dir(root: pathlib.Path) -> pathlib.Path:
  return root / NAME / DATASET_VERSION


def merge(out: pathlib.Path, count: int) -> Optional[dict[str, Any]]:
  """The parts of `count` tasks as one TFDS dataset in out/xperience_hands/1.0.0 (module
  docstring); None while a part is missing. Returns examples and shards per split."""
  parts = [dataset_dir(part_dir(out, (i, count))) for i in range(count)]
  if not all((p / "dataset_info.json").exists() for p in parts):
    return None
  builders = [tfds.builder_from_directory(p) for p in parts]
  final = dataset_dir(out)
  tmp = final.with_name(f"{common.TMP}{os.getpid()}-{DATASET_VERSION}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  shutil.copy(parts[0] / "features.json", tmp / "features.json")
  splits, counts = [], {}
  names = sorted({s for b in builders for s in b.info.splits},
                 key=lambda s: (common.SPLIT_ORDER + (s,)).index(s))
  for name in names:
    infos = [b.info.splits[name] for b in builders if name in b.info.splits]
    files = [f for b in builders if name in b.info.splits
             for f in b.info.splits[name].filepaths]
    template = infos[0].filename_template.replace(data_dir=tmp)
    for j, f in enumerate(files):
      os.link(f, template.sharded_filepath(shard_index=j, num_shards=len(files)))
    lengths = [n for si in infos for n in si.shard_lengths]
    splits.append(tfds.core.SplitInfo(name=name, shard_lengths=lengths,
                                      num_bytes=sum(int(si.num_bytes) for si in infos),
                                      filename_template=template))
    counts[name] = {"episodes": sum(lengths), "shards": len(files)}
  info = builders[0].info
  info.set_splits(tfds.core.SplitDict(splits))
  info.write_to_directory(tmp)
  if final.exists():
    shutil.rmtree(final)
  os.replace(tmp, final)
  return counts


def run(shards_dir: str, out: str, opts: Options = Options(), raw: Optional[str] = None,
        task: tuple[int, int] = (0, 1), merge_only: bool = False, progress: bool = True,
        command: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """The whole export (module docstring); returns a summary."""
  corpus = common.open_corpus(shards_dir)
  space = opts.check(corpus)
  job = common.Job(out, "rlds", dataclasses.asdict(opts), common.corpus_source(corpus),
                   task=task, command=command)
  order = common.episodes_by_split(corpus, opts.split)
  if not order:
    raise common.ExportError(f"{corpus.root}: no episodes in split '{opts.split}'")
  mine = [i for k, i in enumerate(order) if k % task[1] == task[0]]
  built = 0
  if not progress:
    tfds.disable_progress_bar()
  target = part_dir(job.out, task)
  if not merge_only and not (dataset_dir(target) / "dataset_info.json").exists():
    if not mine:
      raise common.ExportError(f"--task-index {task[0]} of --task-count {task[1]}: no "
                               f"episodes (there are {len(order)}): use fewer tasks")
    builder = XperienceHands(corpus=corpus, raw=common.raw_root(corpus, raw), opts=opts,
                             episodes=mine, data_dir=str(target))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(verify_ssl=False))
    built = len(mine)
  counts = merge(job.out, task[1])
  manifest = None
  if counts is not None:
    common.write_action_space(job.out, corpus, space, order)
    steps = {}
    for i in order:
      e = corpus.episodes[i]
      steps[e["split"]] = steps.get(e["split"], 0) + len(range(0, e["length"], opts.step))
    manifest = {
        "export": "rlds", "version": common.EXPORT_VERSION, "format": "RLDS (TFDS "
        f"{tfds.__version__}, array_record)", "dataset_dir": f"{NAME}/{DATASET_VERSION}",
        "command": job.command, "options": job.plan["options"], "source": job.source,
        "split_counts": {s: c["episodes"] for s, c in counts.items()},
        "episode_split_counts": {s: c["episodes"] for s, c in counts.items()},
        "step_split_counts": dict(sorted(steps.items())),
        "shards": {s: c["shards"] for s, c in counts.items()},
        "read_back": "tfds.builder_from_directory(DIR/xperience_hands/1.0.0)"
                     ".as_data_source(split)",
        "tfrecord": "tfds convert_format --dataset_dir DIR/xperience_hands/1.0.0 "
                    "--out_file_format tfrecord --out_dir OUT/xperience_hands/1.0.0 "
                    "(needs TensorFlow)",
        "notes": ["Normalisation statistics (normalization_stats.json) come from train "
                  "episodes only; actions in the episodes are not normalised.",
                  "Holds derived images of gated data: not a public package."]}
    common.write_json(job.out / MANIFEST, manifest)
  return {"episodes": len(order), "exported_now": built, "failed_now": 0,
          "merged": manifest is not None,
          "split_counts": manifest["split_counts"] if manifest else None,
          "steps": manifest["step_split_counts"] if manifest else None}


def main(argv: Sequence[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  common.policy_flags(p)
  p.add_argument("--jpeg-quality", type=int, default=Options.jpeg_quality)
  args = p.parse_args(argv)
  opts = Options(jpeg_quality=args.jpeg_quality, **common.policy_options(args))
  return common.cli("rlds", run, args, opts, argv, lambda s: (
      f"{sum(s['split_counts'].values())} episodes ({common.counts_text(s['split_counts'])})"
      f", {sum(s['steps'].values())} steps in {dataset_dir(pathlib.Path(args.out))}"))


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
