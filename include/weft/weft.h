/* weft C API: the big-memory pool (BM) from C (C11) or any language with a C FFI.
 *
 *   weft_config* cfg = weft_config_new();
 *   weft_config_set(cfg, "pool_name", "kv");
 *   weft_config_set(cfg, "rank_size", "1GiB");
 *   weft_pool* pool = NULL;
 *   if (weft_pool_join(cfg, WEFT_JOIN_AUTO, &pool) != WEFT_OK)
 *     fprintf(stderr, "join: %s\n", weft_last_error());
 *   weft_config_free(cfg);
 *   uint64_t gva;
 *   weft_alloc(pool, 1 << 20, WEFT_PLACE_RANK, 1, &gva);          // on rank 1
 *   weft_copy(pool, gva, (uint64_t)(uintptr_t)buf, 1 << 20, WEFT_DIR_LH2GH);
 *   weft_free(pool, gva);
 *   weft_pool_free(pool);                                          // leaves the pool
 *
 * Conventions
 * - Every function that can fail returns int: WEFT_OK (0) or a negative WEFT_E_* code. The
 *   codes are weft::Code (include/weft/status.h) negated; they are stable and never renumbered.
 * - After a failure, weft_last_error() gives a message that says what went wrong and what to do
 *   ("POOL_FULL: ..."). It is thread-local (the one piece of process state of this API: each
 *   thread sees the message of its own last failed call) and stays until the next failed call on
 *   the same thread; successful calls do not clear it. The pointer is valid until then.
 * - A null handle, null output pointer or out-of-range enum value is WEFT_E_INVALID_ARGUMENT, never a
 *   crash. The *_free functions accept NULL and do nothing.
 * - No C++ exception crosses this boundary: one inside weft becomes WEFT_E_INTERNAL.
 * - Addresses are uint64_t: a GVA of the pool, or a local pointer cast through uintptr_t.
 * - Handles are not copied by the library and may be used from several threads at once, except
 *   weft_pool_leave / weft_pool_free, which must not run concurrently with other calls on the same
 *   pool, and weft_copy_free, which must not run concurrently with calls on the same copy.
 * - No global state besides weft_last_error(): several pools may live in one process.
 */
#ifndef WEFT_WEFT_H_
#define WEFT_WEFT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------------------------ */

enum {
  WEFT_OK = 0,
  WEFT_E_INVALID_ARGUMENT = -1,   /* a null pointer, zero length where one is needed, a bad option */
  WEFT_E_OUT_OF_RANGE = -2,       /* an address or length runs past a segment or the pool window */
  WEFT_E_INVALID_ADDRESS = -3,    /* not a GVA of this pool, or not the start of an allocation */
  WEFT_E_DOUBLE_FREE = -4,        /* freeing memory that is not allocated */
  WEFT_E_POOL_FULL = -5,          /* no free block large enough */
  WEFT_E_PEER_DOWN = -6,          /* the peer that owns the memory has left or died */
  WEFT_E_TIMEOUT = -7,            /* the deadline passed before the operation completed */
  WEFT_E_MISMATCH = -8,           /* joining a pool with another name or size */
  WEFT_E_PROTOCOL = -9,           /* a malformed, truncated or oversized message */
  WEFT_E_IO = -10,                /* a system call failed (errno in the message) */
  WEFT_E_UNAVAILABLE = -11,       /* the coordinator or a service cannot be reached */
  WEFT_E_NOT_SUPPORTED = -12,     /* the operation has no path on this machine */
  WEFT_E_PERMISSION_DENIED = -13, /* wrong access key or permission */
  WEFT_E_UNAUTHENTICATED = -14,   /* missing or wrong cluster secret */
  WEFT_E_NOT_FOUND = -15,         /* a name or handle that is not known */
  WEFT_E_ALREADY_EXISTS = -16,    /* a name or registration that is already taken */
  WEFT_E_CANCELLED = -17,         /* the pool was left while the operation was pending, or before it */
  WEFT_E_NOT_REGISTERED = -18,    /* local memory that is not registered */
  WEFT_E_CUDA = -19,              /* a CUDA call failed (the CUDA error in the message) */
  WEFT_E_INTERNAL = -20,          /* a bug in weft: please report it */
  WEFT_E_BUSY = -21               /* still in use (a transfer batch still running) */
};

/* Stable name of a code: "OK", "POOL_FULL", ...; "UNKNOWN" for a number that is not a code.
 * The string is static. */
const char* weft_error_string(int code);

/* Message of the last failed call on this thread ("" if none yet). See Conventions. */
const char* weft_last_error(void);

/* ---- configuration ----------------------------------------------------------------------- */

/* Keys and values as in docs/config.md ("pool_name", "rank_size" = "64MiB", ...). A pool's
 * effective config is: defaults < WEFT_<KEY> environment variables < the keys set here. */
typedef struct weft_config weft_config;

weft_config* weft_config_new(void); /* NULL only when out of memory */
/* Checks the key and the value now: WEFT_E_INVALID_ARGUMENT names an unknown key or a bad value.
 * Setting a key again replaces its value. */
int weft_config_set(weft_config* config, const char* key, const char* value);
void weft_config_free(weft_config* config);

/* ---- the pool (BM) ----------------------------------------------------------------------- */

typedef struct weft_pool weft_pool;

enum {
  WEFT_JOIN_AUTO = 0, /* join the pool's coordinator; host one in this process if none answers */
  WEFT_JOIN_HOST = 1, /* host the coordinator here (WEFT_E_ALREADY_EXISTS if one answers) */
  WEFT_JOIN_JOIN = 2  /* join only (WEFT_E_UNAVAILABLE if none answers) */
};

/* Creates or joins the pool that config names; *out is set only on success. The config can be
 * freed right after. WEFT_E_MISMATCH if the pool exists with another rank_size. */
int weft_pool_join(const weft_config* config, int mode, weft_pool** out);
/* Leaves the pool: the others are told, and later calls on this pool return WEFT_E_CANCELLED.
 * If this peer hosts the coordinator, the pool's control plane ends with it. Idempotent. */
int weft_pool_leave(weft_pool* pool);
/* Leaves if needed and releases the handle. */
void weft_pool_free(weft_pool* pool);

/* This peer's rank; UINT32_MAX for a NULL pool. */
uint32_t weft_pool_rank(const weft_pool* pool);
/* Bytes this peer contributes (rank_size); 0 for a NULL pool. */
uint64_t weft_pool_local_size(const weft_pool* pool);
/* First GVA of a rank's host slice (WEFT_E_OUT_OF_RANGE past max_ranks). */
int weft_pool_slice_address(const weft_pool* pool, uint32_t rank, uint64_t* out);
/* First GVA of a rank's device slice (its GPU memory; config key device_size). */
int weft_pool_device_slice_address(const weft_pool* pool, uint32_t rank, uint64_t* out);
/* Bytes of GPU memory this peer contributes (device_size); 0 without a device slice. */
uint64_t weft_pool_device_size(const weft_pool* pool);
/* The rank owning a GVA (WEFT_E_INVALID_ADDRESS outside the pool). */
int weft_pool_rank_of(const weft_pool* pool, uint64_t gva, uint32_t* out);
/* Where [gva, gva + len) is mapped in this process, for direct loads and stores (same node
 * only); valid while its owner is up. */
int weft_pool_local_address(const weft_pool* pool, uint64_t gva, uint64_t len, void** out);

/* Waits until at least `count` peers (this one included) are in the pool. timeout_ms < 0:
 * forever. WEFT_E_TIMEOUT past it. */
int weft_pool_wait_for_peers(weft_pool* pool, uint32_t count, int64_t timeout_ms);
/* Every live peer enters; WEFT_E_PEER_DOWN if one dies first; WEFT_E_TIMEOUT past the timeout
 * (timeout_ms < 0: forever). */
int weft_pool_barrier(weft_pool* pool, int64_t timeout_ms);

/* ---- global malloc ----------------------------------------------------------------------- */

enum {
  WEFT_PLACE_LOCAL = 0,  /* this peer's slice */
  WEFT_PLACE_RANK = 1,   /* the slice of `rank` */
  WEFT_PLACE_SPREAD = 2, /* the live slice with the most free bytes */
  WEFT_PLACE_DEVICE = 0x100 /* or'ed with one of the above: in the device region (GPU memory) */
};

/* Allocates size > 0 bytes of pooled host memory (device memory with WEFT_PLACE_DEVICE); *out_gva is its GVA. WEFT_E_POOL_FULL when no
 * block is large enough (the message gives the largest free block), WEFT_E_PEER_DOWN or
 * WEFT_E_NOT_FOUND for a rank that is not in the pool. `rank` is read for WEFT_PLACE_RANK only. */
int weft_alloc(weft_pool* pool, uint64_t size, int placement, uint32_t rank, uint64_t* out_gva);
/* WEFT_E_INVALID_ADDRESS if gva is not the start of an allocation, WEFT_E_DOUBLE_FREE if it is
 * already free, WEFT_E_PEER_DOWN if its owner left. */
int weft_free(weft_pool* pool, uint64_t gva);

/* ---- copies ------------------------------------------------------------------------------ */

/* The direction of a copy (L = local pointer, G = GVA; H = host, D = device); WEFT_DIR_AUTO infers
 * it from the addresses. Same numbers as weft::engine::Direction; stable, new ones appended. */
enum {
  WEFT_DIR_AUTO = 0,
  WEFT_DIR_LH2LH = 1,
  WEFT_DIR_LH2GH = 2,
  WEFT_DIR_GH2LH = 3,
  WEFT_DIR_GH2GH = 4,
  WEFT_DIR_LH2GD = 5,
  WEFT_DIR_LD2GH = 6,
  WEFT_DIR_LD2GD = 7,
  WEFT_DIR_GH2GD = 8,
  WEFT_DIR_GH2LD = 9,
  WEFT_DIR_GD2GH = 10,
  WEFT_DIR_GD2GD = 11,
  WEFT_DIR_GD2LH = 12,
  WEFT_DIR_GD2LD = 13,
  WEFT_DIR_LH2LD = 14,
  WEFT_DIR_LD2LH = 15,
  WEFT_DIR_LD2LD = 16
};

typedef struct weft_copy_request {
  uint64_t dst; /* a GVA, or a local pointer cast through uintptr_t */
  uint64_t src;
  uint64_t len;
} weft_copy_request;

/* Copies len bytes from src to dst and returns when they are there (or failed, or the
 * configured deadline_ms passed: WEFT_E_TIMEOUT). */
int weft_copy(weft_pool* pool, uint64_t dst, uint64_t src, uint64_t len, int direction);

/* Copies n requests together. results (may be NULL) receives one code per request. Returns
 * WEFT_OK if all succeeded, else the code of the first failed request (weft_last_error() names
 * its index). */
int weft_copy_batch(weft_pool* pool, const weft_copy_request* requests, size_t n, int direction, int* results);

/* A KV page batch in one GPU kernel launch: page i goes from src_base + src_pages[i] * page_bytes
 * to dst_base + dst_pages[i] * page_bytes (bases are GVAs or local pointers; both ends device
 * memory or host memory the GPU can address). One code for the whole batch; nothing is copied
 * when it fails: WEFT_E_INVALID_ARGUMENT (page_bytes 0, NULL lists with count > 0),
 * WEFT_E_OUT_OF_RANGE (an index past an end's memory), WEFT_E_NOT_SUPPORTED (no GPU here, or an
 * end the GPU cannot address: use weft_copy_batch). cuda_stream: a cudaStream_t of the copying
 * GPU to order the copy on (the call then returns once it is enqueued), or NULL to wait for it.
 * Destination pages must not overlap. The lists may be reused as soon as the call returns. */
int weft_copy_pages(weft_pool* pool, uint64_t dst_base, uint64_t src_base, uint64_t page_bytes,
                    const uint32_t* dst_pages, const uint32_t* src_pages, size_t count, int direction,
                    void* cuda_stream);

/* The same with the page indices already on the GPU (a block table kept in device memory):
 * `count` interleaved (dst index, src index) uint32 pairs at `device_pairs` (device memory of the
 * copying GPU, 8-byte aligned), which the host never reads. The caller states the largest index
 * of each end; both ends are bounds-checked over those, and a pair past them is not copied
 * (WEFT_E_OUT_OF_RANGE once the call returns; the other pages are copied). Synchronous. */
int weft_copy_pages_device_indexed(weft_pool* pool, uint64_t dst_base, uint64_t src_base, uint64_t page_bytes,
                                   const uint32_t* device_pairs, size_t count, uint32_t max_dst_index,
                                   uint32_t max_src_index, int direction);

/* An asynchronous copy. The name weft_copy is the blocking call above (C has one namespace for
 * functions and type names), so the handle type is weft_copy_handle. */
typedef struct weft_copy_handle weft_copy_handle;

/* Starts a copy and returns at once; errors found at submission (a bad address, a dead peer)
 * are reported by wait/poll. The buffers must stay valid until the copy is done. */
int weft_copy_async(weft_pool* pool, uint64_t dst, uint64_t src, uint64_t len, int direction,
                    weft_copy_handle** out);
/* Waits for the copy: WEFT_OK, its error, or WEFT_E_TIMEOUT if it is not done within
 * timeout_ms (-1: forever; 0: do not wait). After a timeout the copy goes on; wait again. */
int weft_copy_wait(weft_copy_handle* copy, int64_t timeout_ms);
/* 1 while running, 0 when done and successful, a negative code when done and failed. */
int weft_copy_poll(weft_copy_handle* copy);
/* Releases the handle; a copy still running goes on to completion (keep its buffers valid). */
void weft_copy_free(weft_copy_handle* copy);

/* The path a copy would take and why ("LH -> GH (same node) via shm: ..."), without copying.
 * Writes at most buf_size bytes including the terminating NUL into buf (buf may be NULL when
 * buf_size is 0) and returns the length of the full text, like snprintf, or a negative code. */
int weft_pool_route(weft_pool* pool, uint64_t dst, uint64_t src, uint64_t len, int direction, char* buf,
                    size_t buf_size);

/* ---- transfer engine (Trans) ------------------------------------------------------------- */
/* Point-to-point one-sided READ/WRITE between registered buffers of named peers, with the
 * meaning of Mooncake's TransferEngine (docs/trans.md). A remote address is the peer's own
 * virtual address inside a buffer it registered; a local address must lie inside a buffer this
 * engine registered. */

typedef struct weft_trans weft_trans;

enum { WEFT_TRANS_READ = 0, WEFT_TRANS_WRITE = 1 }; /* Mooncake's OPCODE_READ / OPCODE_WRITE */

/* Per-request states of a batch. */
enum { WEFT_TRANS_PENDING = 0, WEFT_TRANS_COMPLETED = 1, WEFT_TRANS_FAILED = 2, WEFT_TRANS_TIMEOUT = 3 };

typedef struct weft_trans_request {
  int opcode;           /* WEFT_TRANS_READ (remote -> local) or WEFT_TRANS_WRITE (local -> remote) */
  void* local;          /* inside a registered buffer of this engine */
  uint64_t segment;     /* from weft_trans_open_segment */
  uint64_t remote_addr; /* the peer's virtual address, inside a buffer it registered */
  uint64_t length;      /* > 0 */
} weft_trans_request;

/* Starts an engine. local_name: its host (or host:port) in p2p mode, its unique name with a
 * directory. metadata: "P2PHANDSHAKE", "etcd://h:p" (or a bare "h:p"), "http://h:p/metadata",
 * "embedded://h:p". protocol: "tcp", or "rdma" (the ucx transport, docs/ucx.md; the NICs from
 * UCX_NET_DEVICES). Where UCX cannot run, and for other protocols, WEFT_E_NOT_SUPPORTED unless the
 * environment sets WEFT_PROTOCOL_FALLBACK=tcp. config (may be NULL) supplies cluster_secret,
 * tcp_lanes, copy_threads (threads carrying out batches) and deadline_ms (a batch's deadline). */
int weft_trans_new(const char* local_name, const char* metadata, const char* protocol, const weft_config* config,
                   weft_trans** out);
/* Waits for running batches, withdraws the descriptor, stops serving. NULL is ignored. */
void weft_trans_free(weft_trans* engine);
/* The engine's name ("host:rpc_port" in p2p mode): like snprintf into buf; returns its length. */
int weft_trans_name(const weft_trans* engine, char* buf, size_t buf_size);
/* The rpc port (p2p: the descriptor endpoint; else the data port), or a negative code. */
int weft_trans_rpc_port(const weft_trans* engine);

/* location: "cpu:N" or "*" (host memory, or device memory where CUDA reports the address as
 * such), "cuda:N" (device memory, staged through host memory on the tcp path;
 * WEFT_E_NOT_SUPPORTED without a usable GPU, WEFT_E_INVALID_ARGUMENT at a host address).
 * WEFT_E_ALREADY_EXISTS for an overlap. */
int weft_trans_register(weft_trans* engine, void* addr, uint64_t length, const char* location,
                        int remote_accessible);
/* addr must be the start of a registered buffer (else WEFT_E_NOT_FOUND); returns once no peer
 * request uses it, so it may be freed then. */
int weft_trans_unregister(weft_trans* engine, void* addr);

/* Resolves a peer by name; the same name gives the same handle. WEFT_E_NOT_FOUND: unknown. */
int weft_trans_open_segment(weft_trans* engine, const char* name, uint64_t* out_segment);
int weft_trans_close_segment(weft_trans* engine, uint64_t segment);

/* Queues n requests and returns at once with a batch id (never 0). notify_name/notify_msg (both
 * NULL for none) are delivered to each target after its requests completed. Malformed requests
 * refuse the whole batch (WEFT_E_INVALID_ARGUMENT, WEFT_E_NOT_FOUND, WEFT_E_NOT_REGISTERED). */
int weft_trans_submit(weft_trans* engine, const weft_trans_request* requests, size_t n, const char* notify_name,
                      const char* notify_msg, uint64_t* out_batch);
/* Without blocking: 1 while running; when done WEFT_OK or the code of the first failed request.
 * states/results (each may be NULL, else n entries, n = the batch's size) get WEFT_TRANS_* and
 * codes per request. */
int weft_trans_status(weft_trans* engine, uint64_t batch, int* states, int* results, size_t n);
/* Blocks until the batch is done (or timeout_ms, -1 forever: then WEFT_E_TIMEOUT and the batch
 * goes on); returns WEFT_OK or the first failure; results as for weft_trans_status. */
int weft_trans_wait(weft_trans* engine, uint64_t batch, int64_t timeout_ms, int* results, size_t n);
/* WEFT_E_BUSY while running, WEFT_E_NOT_FOUND for an unknown id. */
int weft_trans_free_batch(weft_trans* engine, uint64_t batch);
/* submit + wait + free: WEFT_OK or the first failure; results (may be NULL) gets n codes. */
int weft_trans_transfer(weft_trans* engine, const weft_trans_request* requests, size_t n, int* results);

/* Sends a notification alone. */
int weft_trans_notify(weft_trans* engine, uint64_t segment, const char* name, const char* msg);
/* Takes the oldest received notification: 1 and copies it (NUL-terminated, truncated to the
 * buffers; *msg_len gets the full message length, which may contain NULs), or 0 when none. */
int weft_trans_take_notification(weft_trans* engine, char* name, size_t name_size, char* msg, size_t msg_size,
                                 size_t* msg_len);
/* WEFT_OK when the named peer answers on its data endpoint. */
int weft_trans_probe(weft_trans* engine, const char* name);

/* ---- end of the transfer engine section -------------------------------------------------- */

/* ---- the KV store ------------------------------------------------------------------------ */
/* Objects (a key and its bytes) kept in the pool's memory, written once by one peer and read by
 * any, with leases, replicas and eviction: include/weft/store.h from C (docs/store.md). A store
 * is also a peer of its pool and contributes rank_size of memory to it; the pool's coordinator
 * (the first peer, `weft meta` or `weft store-master`) hosts the store's master.
 *
 *   weft_store* store = NULL;
 *   weft_store_open(cfg, WEFT_JOIN_JOIN, &store);        // a `weft store-master` runs the pool
 *   weft_store_put(store, "layer0/block7", bytes, n, NULL);
 *   weft_store_register_buffer(store, buf, cap);         // once, for the zero-copy calls
 *   int64_t got = weft_store_get_into(store, "layer0/block7", buf, cap);  // bytes, or a code
 *   weft_store_close(store);
 *
 * Keys are NUL-terminated strings of 1..4096 bytes (the terminator not counted); a NULL, empty
 * or longer key is WEFT_E_INVALID_ARGUMENT. Every call may also fail with WEFT_E_UNAVAILABLE
 * (the master does not answer), WEFT_E_TIMEOUT (deadline_ms passed) or WEFT_E_PEER_DOWN (the
 * peer holding the only replica has gone). */

typedef struct weft_store weft_store;

/* How a put places its object. A NULL place means the defaults: one replica, no pin, the
 * writer's own slice first. Start from WEFT_STORE_PLACE_DEFAULT to set only some fields. */
typedef struct weft_store_place {
  uint32_t replicas;      /* copies on distinct peers, best effort: 1..8 (else INVALID_ARGUMENT) */
  int soft_pin;           /* nonzero: evicted only after every unpinned object */
  int hard_pin;           /* nonzero: never evicted; removed only by a remove */
  int32_t preferred_rank; /* the first replica's peer; -1: the writer's own slice first */
} weft_store_place;

#define WEFT_STORE_PLACE_DEFAULT {1, 0, 0, -1}

/* Joins the pool that config names and its store, as weft_pool_join does (mode: WEFT_JOIN_*;
 * WEFT_JOIN_AUTO hosts the coordinator and the master here when none answers). *out is set only
 * on success; the config can be freed right after. WEFT_E_UNAVAILABLE: WEFT_JOIN_JOIN and no
 * coordinator answers; WEFT_E_MISMATCH: the pool exists with another rank_size. */
int weft_store_open(const weft_config* config, int mode, weft_store** out);
/* Leaves the pool and releases the handle, whatever the result: objects whose only replicas
 * were in this peer's memory are gone. Returns the leave's code; NULL is WEFT_OK. Must not run
 * concurrently with other calls on the same store. */
int weft_store_close(weft_store* store);

/* Writes size > 0 bytes at value under key unless the key exists: WEFT_E_ALREADY_EXISTS then,
 * and the stored value stays. WEFT_E_INVALID_ARGUMENT: a bad key, NULL value, size 0, a value
 * larger than any slice, a bad place. WEFT_E_POOL_FULL: no room even after evicting every
 * object that may go. place may be NULL (defaults). */
int weft_store_put(weft_store* store, const char* key, const void* value, uint64_t size,
                   const weft_store_place* place);
/* The same, overwriting an existing value (readers holding a lease keep reading the old one). */
int weft_store_upsert(weft_store* store, const char* key, const void* value, uint64_t size,
                      const weft_store_place* place);
/* Zero-copy put from inside a registered buffer (weft_store_register_buffer):
 * WEFT_E_NOT_REGISTERED when no registration covers [buffer, buffer + size). upsert: nonzero
 * overwrites an existing value; else as weft_store_put. */
int weft_store_put_from(weft_store* store, const char* key, const void* buffer, uint64_t size,
                        const weft_store_place* place, int upsert);

/* Copies the value of key into [buffer, buffer + size), which must lie inside a registered
 * buffer; returns the value's size in bytes (>= 1), or a negative code:
 * WEFT_E_NOT_FOUND (missing, or a put of it has not ended), WEFT_E_NOT_REGISTERED (the buffer
 * is not registered), WEFT_E_INVALID_ARGUMENT (the buffer is smaller than the value: nothing is
 * written), WEFT_E_TIMEOUT (the copy outlived the read lease: the bytes may be torn, read
 * again). */
int64_t weft_store_get_into(weft_store* store, const char* key, void* buffer, uint64_t size);
/* The value's size in *out_size. WEFT_E_NOT_FOUND when missing. */
int weft_store_get_size(weft_store* store, const char* key, uint64_t* out_size);
/* 1 when key exists (and grants a read lease), 0 when not, or a negative code. */
int weft_store_exists(weft_store* store, const char* key);

/* Removes key: WEFT_E_NOT_FOUND when missing, WEFT_E_BUSY while a reader holds a lease, unless
 * force is nonzero. */
int weft_store_remove(weft_store* store, const char* key, int force);
/* Removes every key matching pattern (ECMAScript syntax, searched anywhere in the key: anchor
 * with ^ and $); out_removed (may be NULL) gets how many went. WEFT_E_INVALID_ARGUMENT for a
 * pattern that does not compile or is over 4096 bytes. Leased objects stay unless force. */
int weft_store_remove_by_regex(weft_store* store, const char* pattern, int force, uint64_t* out_removed);
/* Removes every object (leased ones only with force); out_removed (may be NULL) as above. */
int weft_store_remove_all(weft_store* store, int force, uint64_t* out_removed);

/* Local memory the zero-copy calls (put_from, get_into) may use. WEFT_E_INVALID_ARGUMENT for
 * NULL, size 0 or an overlap with a registered buffer. Unregister: buffer must be the start of a
 * registration (else WEFT_E_NOT_REGISTERED). */
int weft_store_register_buffer(weft_store* store, void* buffer, uint64_t size);
int weft_store_unregister_buffer(weft_store* store, void* buffer);

/* Puts n objects together: keys[i] gets sizes[i] bytes from values[i] (plain memory, no
 * registration needed); the master is asked once. results (may be NULL, else n entries) gets
 * one code per key, as weft_store_put (or weft_store_upsert when upsert is nonzero) would return.
 * Returns WEFT_OK when all succeeded, else the code of the first failed key (weft_last_error()
 * names its index). NULL keys, values or sizes with n > 0, a NULL key, or a NULL value of
 * nonzero size refuse the whole batch with WEFT_E_INVALID_ARGUMENT in every result. */
int weft_store_put_batch(weft_store* store, const char* const* keys, const void* const* values,
                         const uint64_t* sizes, size_t n, const weft_store_place* place, int upsert,
                         int* results);
/* Reads n objects together: keys[i] into [buffers[i], buffers[i] + sizes[i]) (registered, as for
 * weft_store_get_into). results (n entries, required when n > 0) gets one entry per key: the
 * value's size, or a negative code as weft_store_get_into returns. Returns WEFT_OK when all
 * succeeded, else the code of the first failed key. NULL arrays with n > 0, or a NULL key, refuse
 * the whole batch with WEFT_E_INVALID_ARGUMENT in every result. */
int weft_store_get_into_batch(weft_store* store, const char* const* keys, void* const* buffers,
                              const uint64_t* sizes, size_t n, int64_t* results);

/* One copy of an object in memory: the whole value, at pool address gva in the slice of rank. */
typedef struct weft_store_replica {
  uint32_t rank;
  uint64_t gva;
} weft_store_replica;

/* Where key's object is, without a lease and without counting as an access (the answer may go
 * stale at once): *out_size its size; its memory replicas into replicas, at most capacity of
 * them (replicas may be NULL when capacity is 0); *out_count how many it has (more than capacity:
 * call again with room); *out_disk_rank (may be NULL) the rank whose SSD tier keeps a copy, or -1.
 * WEFT_E_NOT_FOUND when missing (or a put of it has not ended). */
int weft_store_describe(weft_store* store, const char* key, uint64_t* out_size, weft_store_replica* replicas,
                        size_t capacity, size_t* out_count, int32_t* out_disk_rank);

/* ---- end of the KV store section --------------------------------------------------------- */

/* ---- symmetric memory (symm) ------------------------------------------------------------- */
/* Teams of pool peers with a symmetric heap, one-sided puts and gets, and the eight collectives:
 * include/weft/symm.h from C (docs/api.md, "Symmetric memory"). Every peer of the pool calls
 * weft_team_create together; an offset into the heap names the same object on every rank.
 *
 *   weft_team* team = NULL;
 *   weft_team_options opts = WEFT_TEAM_OPTIONS_DEFAULT;
 *   opts.heap_bytes = 64 << 20;
 *   weft_team_create(pool, &opts, &team);                               // on every peer
 *   weft_team_allreduce(team, grad, grad, n, WEFT_DTYPE_F32, WEFT_REDUCE_SUM, 0);   // in place
 *   weft_team_free(team);                                               // before weft_pool_free
 *
 * - Collectives (and create, split, malloc, free, barrier) are called by every rank of the team
 *   in the same order. A rank that passes another count, dtype, op or root, or calls another
 *   collective, gets WEFT_E_MISMATCH, and so do the others; a rank whose own arguments are bad
 *   (a NULL buffer with count > 0, a root or dtype out of range) gets WEFT_E_INVALID_ARGUMENT and
 *   the others WEFT_E_MISMATCH at once. After a mismatch the team goes on.
 * - A rank that dies makes the others' calls return WEFT_E_PEER_DOWN; a deadline that passes
 *   returns WEFT_E_TIMEOUT. After either, the team is unusable (every call repeats the error):
 *   free it and create a new one.
 * - timeout_ms > 0 bounds the call; 0 or negative means the team's default
 *   (weft_team_options.timeout_ms). There is no "forever": a rank that never calls must not
 *   hang the others.
 * - Counts are in elements of the dtype; buffers are this process's host memory.
 * - A team is used by one thread at a time. Free every team (sub-teams too) before leaving or
 *   freeing its pool. */

typedef struct weft_team weft_team;

/* Element types and reductions; the numbers are weft::symm::DType and ReduceOp (stable). bf16
 * and f16 reduce in f32 and round to nearest even; integer sums and products wrap. */
enum {
  WEFT_DTYPE_F32 = 0,
  WEFT_DTYPE_BF16 = 1,
  WEFT_DTYPE_F16 = 2,
  WEFT_DTYPE_I32 = 3,
  WEFT_DTYPE_I64 = 4,
  WEFT_DTYPE_U8 = 5
};
enum { WEFT_REDUCE_SUM = 0, WEFT_REDUCE_MAX = 1, WEFT_REDUCE_MIN = 2, WEFT_REDUCE_PROD = 3 };
/* Comparisons of weft_symm_wait_until, and how weft_symm_put_signal updates the signal word. */
enum { WEFT_CMP_EQ = 0, WEFT_CMP_NE = 1, WEFT_CMP_GT = 2, WEFT_CMP_GE = 3, WEFT_CMP_LT = 4, WEFT_CMP_LE = 5 };
enum { WEFT_SIGNAL_SET = 0, WEFT_SIGNAL_ADD = 1 };

/* Bytes of one element of dtype; 0 for a value that is not a WEFT_DTYPE_*. */
size_t weft_dtype_size(int dtype);

/* weft::symm::TeamOptions. Start from WEFT_TEAM_OPTIONS_DEFAULT to set only some fields. */
typedef struct weft_team_options {
  uint64_t heap_bytes;         /* the symmetric heap each rank contributes (malloc's space) */
  uint64_t slot_bytes;         /* bytes per peer and step of a collective: a multiple of 64 */
  uint64_t one_shot_max_bytes; /* larger allreduces reduce-scatter then allgather; 0: 64 KiB */
  uint32_t timeout_ms;         /* the default deadline of every collective call (and of create) */
  const void* user_context;    /* bytes given to every rank (weft_team_user_context); may be NULL */
  size_t user_context_len;
  uint64_t device_heap_bytes;  /* the device heap each rank contributes from its pool device slice; 0: none */
  uint32_t device_async;       /* nonzero: device collectives return once launched (weft_team_device_synchronize) */
} weft_team_options;

#define WEFT_TEAM_OPTIONS_DEFAULT {16u << 20, 256u << 10, 0, 60000, NULL, 0, 0, 0}

/* Collective over every live peer of the pool, each with the same heap_bytes and slot_bytes
 * (WEFT_E_MISMATCH on every peer otherwise). options NULL: the defaults. Team ranks follow pool
 * ranks in order. *out is set only on success. */
int weft_team_create(weft_pool* pool, const weft_team_options* options, weft_team** out);
/* Frees this rank's part of the team (its heap, for the team create made; sub-teams share it):
 * call it on every rank after the team's last collective. NULL is ignored. */
void weft_team_free(weft_team* team);

/* This rank in the team, and the team's size; UINT32_MAX and 0 for a NULL team. */
uint32_t weft_team_rank(const weft_team* team);
uint32_t weft_team_size(const weft_team* team);
/* Bytes of the symmetric heap; 0 for a NULL team. */
uint64_t weft_team_heap_bytes(const weft_team* team);
/* The pool rank of a team rank (WEFT_E_INVALID_ARGUMENT past the team's size). */
int weft_team_pool_rank(const weft_team* team, uint32_t team_rank, uint32_t* out);
/* Rank team_rank's user_context: *out points at it (valid while the team lives), *out_len is
 * its length. */
int weft_team_user_context(const weft_team* team, uint32_t team_rank, const void** out, size_t* out_len);

/* A sub-team of the n team ranks listed (each once; their order gives the new ranks).
 * Collective over this team: every rank passes the same list. Members get the sub-team in
 * *out, the others NULL (and WEFT_OK). The sub-team shares this team's heap (malloc and free on
 * the team create made); free it before its parent. */
int weft_team_split(weft_team* team, const uint32_t* ranks, size_t n, int64_t timeout_ms, weft_team** out);

/* Symmetric allocation, collective: every rank asks for the same size (WEFT_E_MISMATCH
 * otherwise) and gets the same heap offset in *out_offset. WEFT_E_POOL_FULL when the heap has no
 * such block; WEFT_E_NOT_SUPPORTED on a sub-team. */
int weft_symm_malloc(weft_team* team, uint64_t bytes, int64_t timeout_ms, uint64_t* out_offset);
/* Collective; WEFT_E_INVALID_ADDRESS for an offset that starts no block. */
int weft_symm_free(weft_team* team, uint64_t offset, int64_t timeout_ms);
/* This rank's address of a heap offset (WEFT_E_OUT_OF_RANGE past the heap). */
int weft_symm_local(const weft_team* team, uint64_t offset, void** out);
/* A peer's heap at offset, mapped here for loads and stores: WEFT_E_NOT_SUPPORTED for a peer on
 * another node (use put and get). */
int weft_symm_peer_address(const weft_team* team, uint32_t team_rank, uint64_t offset, void** out);

/* The device heap (weft_team_options.device_heap_bytes; every rank on one node with a GPU): the
 * same allocation calls for GPU memory (WEFT_E_NOT_SUPPORTED on a team without one). The
 * collectives given buffers in it run as one kernel on the stream of weft_team_set_stream (a
 * cudaStream_t; NULL: the legacy default stream) and return once it finished (with device_async:
 * once it is launched); what the other ranks read must lie in the device heap at the same offset
 * on every rank. weft_team_device_synchronize waits for the launches still in flight and returns
 * the first failure among them (WEFT_E_MISMATCH, WEFT_E_TIMEOUT, WEFT_E_PEER_DOWN), or WEFT_OK. */
int weft_symm_device_malloc(weft_team* team, uint64_t bytes, int64_t timeout_ms, uint64_t* out_offset);
int weft_symm_device_free(weft_team* team, uint64_t offset, int64_t timeout_ms);
int weft_symm_device_local(const weft_team* team, uint64_t offset, void** out);
int weft_symm_device_peer_address(const weft_team* team, uint32_t team_rank, uint64_t offset, void** out);
void weft_team_set_stream(weft_team* team, void* cuda_stream);
int weft_team_device_synchronize(weft_team* team, int64_t timeout_ms);

/* One-sided: complete in both memories when they return. WEFT_E_INVALID_ARGUMENT for a rank
 * outside the team, WEFT_E_OUT_OF_RANGE for a range past the heap. */
int weft_symm_put(weft_team* team, uint32_t team_rank, uint64_t dst_offset, const void* src, uint64_t len);
int weft_symm_get(weft_team* team, void* dst, uint32_t team_rank, uint64_t src_offset, uint64_t len);
/* A put, then the 8-byte signal word at sig_offset (8-byte aligned) of the same peer set to or
 * increased by value (signal_op: WEFT_SIGNAL_*) once the data is visible there. An add is
 * atomic; to a peer on another node it is WEFT_E_NOT_SUPPORTED. */
int weft_symm_put_signal(weft_team* team, uint32_t team_rank, uint64_t dst_offset, const void* src, uint64_t len,
                         uint64_t sig_offset, uint64_t value, int signal_op);
/* Waits until this rank's signal word at sig_offset compares true (cmp: WEFT_CMP_*) with value:
 * `word cmp value`. WEFT_E_TIMEOUT past the timeout. */
int weft_symm_wait_until(weft_team* team, uint64_t sig_offset, int cmp, uint64_t value, int64_t timeout_ms);
/* This rank's signal word at sig_offset (8-byte aligned, inside the heap). */
int weft_symm_signal_value(const weft_team* team, uint64_t sig_offset, uint64_t* out);
/* Ordering only (puts and gets are complete when they return); WEFT_OK unless team is NULL. */
int weft_symm_fence(weft_team* team);
int weft_symm_quiet(weft_team* team);
/* Every rank of the team enters. */
int weft_team_barrier(weft_team* team, int64_t timeout_ms);

/* The eight collectives on host buffers. count is what each rank contributes or receives per
 * rank; buffers of size × count elements are marked. send may equal recv for broadcast,
 * allreduce, reduce, alltoall, and allgather with send at recv + rank × count. */
int weft_team_broadcast(weft_team* team, void* buf, uint64_t count, int dtype, uint32_t root, int64_t timeout_ms);
/* send: size × count at the root (ignored elsewhere; may be NULL there). */
int weft_team_scatter(weft_team* team, const void* send, void* recv, uint64_t count, int dtype, uint32_t root,
                      int64_t timeout_ms);
/* recv: size × count at the root (ignored elsewhere; may be NULL there). */
int weft_team_gather(weft_team* team, const void* send, void* recv, uint64_t count, int dtype, uint32_t root,
                     int64_t timeout_ms);
/* recv: size × count, rank r's block at r × count. */
int weft_team_allgather(weft_team* team, const void* send, void* recv, uint64_t count, int dtype,
                        int64_t timeout_ms);
/* recv: the reduction at the root (ignored elsewhere). */
int weft_team_reduce(weft_team* team, const void* send, void* recv, uint64_t count, int dtype, int op,
                     uint32_t root, int64_t timeout_ms);
/* send: size × count; recv: block `rank` of the reduction. */
int weft_team_reduce_scatter(weft_team* team, const void* send, void* recv, uint64_t count, int dtype, int op,
                             int64_t timeout_ms);
int weft_team_allreduce(weft_team* team, const void* send, void* recv, uint64_t count, int dtype, int op,
                        int64_t timeout_ms);
/* send and recv: size × count; block b of rank r lands as block r of rank b. */
int weft_team_alltoall(weft_team* team, const void* send, void* recv, uint64_t count, int dtype,
                       int64_t timeout_ms);

/* ---- end of the symmetric memory section ------------------------------------------------- */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* WEFT_WEFT_H_ */
