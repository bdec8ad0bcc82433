"""Training's data path: the order of samples (shuffled windows of shards), reading only what a job takes,
the bounded cache, and the same training from an S3 server, through dropped connections and a SIGKILL."""

from __future__ import annotations


import fsspec
import pytest
import torch

from paris.clusters.export import load_cluster
from paris.clusters.partition import load_partition
from paris.data.shard_format import iter_shards, shard_header
from paris.data.store import load_store
from paris.randomness import ShardWindowBatches
from paris.run import RunDir
from testkit.resume import identical, kill_and_resume, kill_at_step_40, state
from testkit.runs import NUM_IMAGES, copy_run, read_all
from testkit.s3 import flaky_endpoint

COUNTS = [5, 0, 7, 3, 9, 4, 6]  # shard sizes, one empty (a cluster with no rows in a shard)


def _shard_of(index: torch.Tensor, counts: list[int]) -> torch.Tensor:
    return torch.searchsorted(torch.tensor(counts).cumsum(0), index, right=True)


@pytest.mark.parametrize("batch_size", [1, 4, 13])
def test_every_epoch_visits_every_sample_once(batch_size):
    order = ShardWindowBatches(COUNTS, batch_size, seed=3, window=2)
    n, epochs = sum(COUNTS), 3
    seen = torch.cat([order(step) for step in range(epochs * n // batch_size + 1)])
    for e in range(epochs):
        assert sorted(seen[e * n : (e + 1) * n].tolist()) == list(range(n))
    assert not torch.equal(seen[:n], seen[n : 2 * n])  # a fresh order every epoch
    assert torch.equal(order(5), ShardWindowBatches(COUNTS, batch_size, seed=3, window=2)(5))  # a pure function
    assert not torch.equal(seen[:n], torch.cat([ShardWindowBatches(COUNTS, batch_size, 4, 2)(s) for s in
                                                range(n // batch_size + 1)])[:n])  # of the seed too


def test_a_window_is_read_before_the_next_and_read_ahead_names_the_next():
    order = ShardWindowBatches(COUNTS, batch_size=4, seed=0, window=2)
    windows = [order.shard_order(0)[w : w + 2].tolist() for w in range(0, len(COUNTS), 2)]
    visited = _shard_of(torch.cat([order(step) for step in range(sum(COUNTS) // 4)]), COUNTS).tolist()
    window_of = {s: i for i, shards in enumerate(windows) for s in shards}
    visits = [window_of[s] for s in visited]
    assert visits == sorted(visits) and len(set(visits)) > 2  # window after window, never back to an earlier one
    for step in range(sum(COUNTS) // 4):
        mine = set(_shard_of(order(step), COUNTS).tolist())
        assert len(mine) <= 2 * 2  # at most two windows of two shards
    last_of_step_0 = int(_shard_of(order(0)[-1:], COUNTS))
    w = next(i for i, shards in enumerate(windows) if last_of_step_0 in shards)
    assert order.next_window(0) == windows[w + 1]


def test_a_window_as_large_as_the_data_is_a_full_shuffle():
    order = ShardWindowBatches(COUNTS, batch_size=sum(COUNTS), seed=0, window=len(COUNTS))
    shards = _shard_of(order(0), COUNTS)
    assert (shards[:10] != shards[:10].sort().values).any()  # shards interleaved from the first step


def _full(run: RunDir, prefix: str = "data") -> dict:
    """Every column of every shard, read whole: what the store must agree with."""
    shards = [tensors for _, tensors, _ in iter_shards(run, prefix)]
    return {k: torch.cat([s[k] for s in shards]) for k in shards[0]}


def test_batches_are_the_samples_asked_for_in_that_order(partitioned):
    run = RunDir(str(partitioned))
    full, store = _full(run), load_store(run)
    index = torch.randperm(NUM_IMAGES, generator=torch.Generator().manual_seed(0))[:50]
    batch = store.batch(index)
    assert batch.latents.dtype == torch.float16  # as stored: made float on the training device
    assert torch.equal(batch.latents, full["latents"][index]) and torch.equal(batch.rows, index)
    assert torch.equal(batch.text["text_ids"], full["text_ids"][index]) and torch.equal(batch.labels, full["labels"][index])
    part, cluster = load_cluster(run, 1)
    rows = (part.assignments == 1).nonzero()[:, 0]
    assert len(cluster) == len(rows) and torch.equal(read_all(cluster).rows, rows)
    assert torch.equal(cluster.batch(torch.tensor([3, 0])).latents, full["latents"][rows[[3, 0]]])
    rest, held = store.split(0.1, seed=0, most=20)
    assert len(held) == 20 and len(rest) == NUM_IMAGES - 20
    assert not set(read_all(held).rows.tolist()) & set(read_all(rest).rows.tolist())


def test_a_cluster_reads_only_its_rows_and_never_the_features(partitioned, monkeypatch):
    from paris.data import shard_reader

    run = RunDir(str(partitioned))
    part, cluster = load_cluster(run, 0)
    fetched: list[tuple[str, int, int]] = []
    fetch = shard_reader._fetch

    def recording(run, rel, spans):
        fetched.extend((rel, a, b) for column in spans for a, b in column)
        return fetch(run, rel, spans)

    monkeypatch.setattr(shard_reader, "_fetch", recording)
    read_all(cluster)
    rel = "data/shards/000000.safetensors"
    header, header_end = shard_header(run, rel)
    mine = [(a, b) for path, a, b in fetched if path == rel]
    features = [header_end + o for o in header["features"]["data_offsets"]]
    assert mine and not any(a < features[1] and b > features[0] for a, b in mine)  # no byte of the features
    begin, end = (header_end + o for o in header["latents"]["data_offsets"])
    row_bytes = (end - begin) // header["latents"]["shape"][0]
    latents = sum(min(b, end) - max(a, begin) for a, b in mine if a < end and b > begin)
    count = header["latents"]["shape"][0]
    rows = int((part.assignments[:count] == 0).sum())
    # exactly its rows, or when they are most of the shard, all of them (checked by one hash: paris.data.row_checksums)
    assert 0 < rows < count and latents == (count if 2 * rows >= count else rows) * row_bytes


def test_the_cache_holds_a_bounded_number_of_shards(partitioned):
    store = load_store(RunDir(str(partitioned)))
    order = store.batches(batch_size=8, seed=0, shuffle_buffer=100)  # windows of one 128-sample shard
    for step in range(3 * NUM_IMAGES // 8):
        store.prefetch(order.next_window(step))
        store.batch(order(step))
        assert len(store._cache) <= store._cache.capacity == 3 * 1


@pytest.mark.slow
def test_a_run_on_s3_trains_the_same_expert_through_dropped_connections(partitioned, s3_bucket, tmp_path, config):
    from paris.train.expert import train_expert

    local = copy_run(partitioned, tmp_path / "local")
    fsspec.filesystem("s3").put(str(partitioned), f"{s3_bucket}/run", recursive=True)
    remote = RunDir(f"{s3_bucket}/run")
    assert torch.equal(load_partition(remote).assignments, load_partition(local).assignments)
    train_expert(local, config, 0)
    with flaky_endpoint() as proxy:
        proxy.cut(3, after=100)  # the first three reads are cut mid-response, and retried
        train_expert(RunDir(remote.url), config, 0)
        assert proxy.cuts == 3
    weights = "experts/0/final/diffusion_pytorch_model.safetensors"
    a, b = local.load_tensors(weights), RunDir(remote.url).load_tensors(weights)
    assert identical(a, b)


@pytest.mark.slow
def test_a_job_killed_while_reading_from_s3_resumes_bitwise(s3_bucket, resume_reference):
    base, reference = resume_reference
    fsspec.filesystem("s3").put(str(base), f"{s3_bucket}/killed", recursive=True)
    run = RunDir(f"{s3_bucket}/killed")
    assert kill_and_resume(run, kill_at_step_40, max_kills=1) == 1
    assert identical(state(run), reference)
