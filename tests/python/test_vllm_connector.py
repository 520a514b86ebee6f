"""weft.vllm.WeftConnector driven as vLLM drives it: a prefill instance's scheduler and worker and a
decode instance's, in one process (the data path between processes is test_pd.py's), on torch CPU
tensors in vLLM's [2, num_blocks, block_size, heads, head_dim] layout. Every block of the request is
compared in every layer; the prefiller frees its blocks only after the read, failures become load
errors. Needs vLLM (and torch); skipped with the reason where they are not installed."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest

vllm = pytest.importorskip("vllm", reason="weft.vllm's tests need vLLM installed (pip install vllm); "
                           "the KV data path itself is tested by test_pd.py")
torch = pytest.importorskip("torch")

from vllm.config import KVTransferConfig  # noqa: E402
from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory  # noqa: E402
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole  # noqa: E402
from vllm.v1.request import RequestStatus  # noqa: E402

from weft.vllm import WeftConnector  # noqa: E402

LAYERS, BLOCKS, BLOCK_SIZE, HEADS, HEAD_DIM = 4, 32, 16, 2, 8
POISON = -21846  # 0xAAAA as int16


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("WEFT_CLUSTER_SECRET", "vllm-connector-test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(engine_id: str, port: int, **extra) -> SimpleNamespace:
    kv = KVTransferConfig(kv_connector="WeftConnector", kv_connector_module_path="weft.vllm", kv_role="kv_both",
                          engine_id=engine_id,
                          kv_connector_extra_config=dict({"host": "127.0.0.1", "port": port, "read_timeout_s": 5,
                                                          "handshake_timeout_s": 5}, **extra))
    return SimpleNamespace(kv_transfer_config=kv,
                           parallel_config=SimpleNamespace(tensor_parallel_size=1, data_parallel_rank=0))


def instance(engine_id: str, port: int, fill=None, **extra):
    cfg = config(engine_id, port, **extra)
    kv_cache_config = SimpleNamespace(num_blocks=BLOCKS)
    scheduler = WeftConnector(cfg, KVConnectorRole.SCHEDULER, kv_cache_config)
    worker = WeftConnector(cfg, KVConnectorRole.WORKER, kv_cache_config)
    shape = (2, BLOCKS, BLOCK_SIZE, HEADS, HEAD_DIM)
    caches = {f"model.layers.{i}.self_attn": (torch.randint(-32768, 32767, shape, dtype=torch.int16) if fill is None
                                              else torch.full(shape, fill, dtype=torch.int16)).view(torch.bfloat16)
              for i in range(LAYERS)}
    worker.register_kv_caches(caches)
    return scheduler, worker, caches


def step(scheduler, worker, finished=frozenset()):
    """One engine step: the scheduler's metadata to the worker, the worker's results back."""
    worker.bind_connector_metadata(scheduler.build_connector_meta(SimpleNamespace()))
    worker.start_load_kv(None)
    result = worker.get_finished(set(finished))
    worker.clear_connector_metadata()
    return result


def request(rid: str, params, tokens: int, status=RequestStatus.RUNNING):
    return SimpleNamespace(request_id=rid, kv_transfer_params=params, prompt_token_ids=list(range(tokens)),
                           status=status)


def blocks(ids):
    return SimpleNamespace(get_unhashed_block_ids=lambda: list(ids))


def until(predicate, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"not within {seconds} s")


def test_vllm_loads_the_connector_by_module_path():
    assert KVConnectorFactory.get_connector_class(config("x", 1).kv_transfer_config) is WeftConnector


def test_a_prefilled_request_is_read_by_the_decoder_and_freed_on_the_prefiller():
    p_port = free_port()
    p_sched, p_worker, p_caches = instance("prefill", p_port)
    d_sched, d_worker, d_caches = instance("decode", free_port(), fill=POISON)
    try:
        # Prefill: the request finishes after its one token; its blocks wait for the decoder.
        remote_ids = [5, 6, 7, 20, 3]
        pre = request("p-1", {"do_remote_decode": True}, 5 * BLOCK_SIZE, RequestStatus.FINISHED_LENGTH_CAPPED)
        delay, params = p_sched.request_finished(pre, remote_ids)
        assert delay and params["do_remote_prefill"] and params["remote_block_ids"] == remote_ids
        assert (params["remote_host"], params["remote_port"], params["remote_request_id"]) == ("127.0.0.1", p_port, "p-1")
        assert step(p_sched, p_worker) == (None, None)  # not read yet, and not yet seen finishing

        # Decode: the whole prompt is loaded asynchronously into freshly allocated blocks.
        dec = request("d-1", dict(params), 5 * BLOCK_SIZE)
        assert d_sched.get_num_new_matched_tokens(dec, 0) == (5 * BLOCK_SIZE, True)
        local_ids = [0, 1, 2, 9, 31]
        d_sched.update_state_after_alloc(dec, blocks(local_ids), 5 * BLOCK_SIZE)
        assert dec.kv_transfer_params["do_remote_prefill"] is False  # one transfer per request
        first = step(d_sched, d_worker)
        received = first[1] or until(lambda: step(d_sched, d_worker)[1])
        assert received == {"d-1"} and d_worker.get_block_ids_with_load_errors() == set()
        for name in p_caches:
            mine, theirs = d_caches[name].view(torch.int16), p_caches[name].view(torch.int16)
            assert torch.equal(mine[:, local_ids], theirs[:, remote_ids])
            others = [b for b in range(BLOCKS) if b not in local_ids]
            assert bool((mine[:, others] == POISON).all())

        # The prefiller reports the request sent once the worker has seen it finish, and only once.
        time.sleep(0.2)
        assert step(p_sched, p_worker) == (None, None)
        sent = until(lambda: step(p_sched, p_worker, {"p-1"})[0] or step(p_sched, p_worker)[0])
        assert sent == {"p-1"}
        assert step(p_sched, p_worker) == (None, None)
    finally:
        for c in (p_worker, d_worker):
            c.shutdown()


def test_an_unreachable_prefiller_becomes_load_errors_and_aborts_free_nothing():
    d_sched, d_worker, d_caches = instance("decode", free_port(), fill=POISON)
    try:
        params = dict(do_remote_prefill=True, remote_block_ids=[1, 2, 3], remote_request_id="gone",
                      remote_host="127.0.0.1", remote_port=free_port(), remote_engine_id="p", tp_size=1)
        dec = request("d-2", params, 3 * BLOCK_SIZE)
        d_sched.update_state_after_alloc(dec, blocks([7, 8, 9, 10]), 4 * BLOCK_SIZE)  # one block more than P has
        received = until(lambda: step(d_sched, d_worker)[1])
        assert received == {"d-2"}
        assert d_worker.get_block_ids_with_load_errors() == {7, 8, 9, 10}
        for cache in d_caches.values():
            assert bool((cache.view(torch.int16) == POISON).all())

        # A prefill request that was aborted is freed at once; params without the remote keys load nothing.
        aborted = request("p-2", {"do_remote_decode": True}, 16, RequestStatus.FINISHED_ABORTED)
        assert d_sched.request_finished(aborted, [1, 2]) == (False, None)
        partial = request("d-3", {"do_remote_prefill": True, "remote_block_ids": [1]}, 16)
        d_sched.update_state_after_alloc(partial, blocks([4]), 16)
        meta = d_sched.build_connector_meta(SimpleNamespace())
        assert meta.reqs_to_recv == {} and meta.reqs_to_send == {}
    finally:
        d_worker.shutdown()


def test_a_decode_request_aborted_before_its_blocks_only_frees_the_prefillers():
    p_sched, p_worker, _ = instance("prefill", free_port())
    d_sched, d_worker, _ = instance("decode", free_port(), fill=POISON)
    try:
        pre = request("p-3", {"do_remote_decode": True}, 2 * BLOCK_SIZE, RequestStatus.FINISHED_LENGTH_CAPPED)
        delay, params = p_sched.request_finished(pre, [4, 5])
        step(p_sched, p_worker, {"p-3"})
        dec = request("d-4", dict(params), 2 * BLOCK_SIZE, RequestStatus.FINISHED_ABORTED)
        assert d_sched.request_finished(dec, []) == (False, None)
        # The decoder never reports it received (vLLM's scheduler no longer knows it) ...
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert step(d_sched, d_worker)[1] is None
        # ... and the prefiller frees its blocks at once, not at the abort timeout.
        assert until(lambda: step(p_sched, p_worker)[0]) == {"p-3"}
    finally:
        p_worker.shutdown()
        d_worker.shutdown()
