/** @file */
/** sparsebudget/sparsebudget.h - the C API (C99 and C++).
 *
 * A stable C ABI over the C++ library, for engines written in C, C++, Rust, Go or anything with a
 * C FFI. The data path of one request and one layer:
 *
 *   sb_plan_create(params)          validate the shape once, size the workspace   (O(1))
 *   sb_summaries_create/append      per-block key summaries, updated as K grows   (O(new tokens))
 *   sb_select_blocks                pick the blocks the budget keeps              (optional)
 *   sb_attend / sb_attend_partition + sb_attend_merge / sb_sparse_attention
 *
 * and, for the budget itself, sb_predictor_load_* + sb_predictor_predict.
 *
 * Conventions (every function):
 *   - Returns sb_status. SB_OK is 0; on failure a message naming the bad value is available from
 *     sb_last_error() on the calling thread, and is passed to the log callback (if set).
 *   - No C++ exception crosses this boundary: an unexpected one becomes SB_ERROR_INTERNAL.
 *   - Every pointer argument is checked; NULL where NULL is not documented as allowed gives
 *     SB_ERROR_INVALID_ARGUMENT naming the argument. Nothing is written through an output
 *     pointer on failure unless stated.
 *   - Parameter structs begin with `size_t struct_size`, which the caller sets to sizeof(the
 *     struct) (the *_init functions do it and fill defaults). A size smaller than the first
 *     version of the struct is rejected; a larger one (a newer header) is accepted when the bytes
 *     beyond what this library knows are zero. Output structs are filled up to struct_size.
 *     Exceptions: a struct embedded by value in another (sb_step_request's budget and kv) and an
 *     element of an array of structs (sb_op_plan's requests) must have exactly this library's
 *     size, since the members or elements after them sit where this header puts them.
 *     A struct_size above SB_MAX_STRUCT_SIZE is rejected (SB_ERROR_INVALID_ARGUMENT): the library
 *     never reads or checks more than that many bytes of a caller's struct.
 *   - Alignment: pointers to floats and int32s (views, selections, workspaces) must be aligned
 *     to their type (4 bytes); a misaligned workspace or selection is SB_ERROR_INVALID_ARGUMENT.
 *   - Ownership: the caller owns every buffer it passes (queries, K/V, outputs, workspaces,
 *     selections, page tables); the library never keeps a pointer to them after a call returns.
 *     Handles (sb_plan, sb_summaries, sb_predictor, sb_thread_pool) are owned by the caller
 *     from *_create until *_destroy; destroy(NULL) is a no-op.
 *   - Threads: functions taking a `const` handle may run concurrently on the same handle;
 *     functions taking a non-const handle need exclusive access to it. A workspace is used by
 *     one call sequence at a time. Execute calls spawn no thread unless given an sb_thread_pool.
 *
 * Shapes and numerics are those of sparsebudget/attention.hpp: num_q_heads query heads share
 * num_kv_heads K/V heads (GQA), the num_queries queries are the LAST positions of a context of
 * context_length tokens, keys are grouped in blocks of block_size tokens.
 */
#ifndef SPARSEBUDGET_SPARSEBUDGET_H_
#define SPARSEBUDGET_SPARSEBUDGET_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define SB_API
#elif defined(__GNUC__)
#define SB_API __attribute__((visibility("default")))
#else
#define SB_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Largest struct_size any parameter or output struct may declare (see the conventions above). */
#define SB_MAX_STRUCT_SIZE 1024

/* ---- status, errors, version, logging ---------------------------------------------------- */

/** Numeric values equal sparsebudget::StatusCode (status.hpp). */
typedef enum sb_status {
  SB_OK = 0,
  SB_ERROR_INVALID_ARGUMENT = 1, /**< malformed parameter: NULL pointer, bad size, bad enum */
  SB_ERROR_OUT_OF_RANGE = 2,     /**< well-formed value outside what the call accepts */
  SB_ERROR_NOT_FOUND = 3,        /**< a named thing (file, predictor type) does not exist */
  SB_ERROR_PARSE = 4,            /**< a file or text could not be parsed */
  SB_ERROR_IO = 5,               /**< reading or writing a file failed */
  SB_ERROR_UNSUPPORTED = 6,      /**< valid request this build or CPU cannot serve */
  SB_ERROR_INTERNAL = 7          /**< a bug or an unexpected failure (e.g. out of memory) */
} sb_status;

/** Stable lowercase name of a status ("ok", "invalid_argument", ...); "unknown" for other values.
 * Static storage, thread-safe, O(1). */
SB_API const char* sb_status_string(sb_status status);

/** Message of the most recent call on THIS thread: "" after a successful call, otherwise e.g.
 * "sb_plan_create: head_dim must be in [1, 4096], got 0". Thread-local storage owned by the
 * library, valid until the next sb_ call on this thread. Never NULL. */
SB_API const char* sb_last_error(void);

/** @name Version of this header, MAJOR.MINOR.PATCH (0.1.0)
 * Equal to sparsebudget::kVersion* of the C++ headers.
 * @{ */
#define SB_VERSION_MAJOR 0 /**< MAJOR */
#define SB_VERSION_MINOR 1 /**< MINOR */
#define SB_VERSION_PATCH 0 /**< PATCH */
/** @} */
/** The library's version, "MAJOR.MINOR.PATCH" (static storage). Compare with SB_VERSION_* to
 * detect a header/library mismatch. */
SB_API const char* sb_version(void);

/** Severity of a log message; the callback gets messages at or above its min_level. */
typedef enum sb_log_level {
  SB_LOG_DEBUG = 0, /**< plan summaries */
  SB_LOG_INFO = 1,  /**< kernel (ISA) selection and caps */
  SB_LOG_WARN = 2,  /**< reserved: the library logs nothing at this level yet */
  SB_LOG_ERROR = 3  /**< every failing call, with its message */
} sb_log_level;

/** Called synchronously on the thread that logs; `message` is valid during the call only. Must be
 * thread-safe if sb_ functions are called from several threads, and must not call sb_ functions
 * that log (sb_set_log_callback included). */
typedef void (*sb_log_callback)(void* user_data, sb_log_level level, const char* message);

/** Installs (or, with callback NULL, removes) the process-wide log callback; messages below
 * min_level are not formatted. Thread-safe; never fails except for a bad level. */
SB_API sb_status sb_set_log_callback(sb_log_callback callback, void* user_data,
                                     sb_log_level min_level);

/* ---- ISA --------------------------------------------------------------------------------- */

/** Numeric values equal sparsebudget::Isa. */
typedef enum sb_isa { SB_ISA_SCALAR = 0, SB_ISA_AVX2 = 1, SB_ISA_AVX512 = 2 } sb_isa;

/** "scalar", "avx2", "avx512"; "unknown" otherwise. */
SB_API const char* sb_isa_name(sb_isa isa);
/** Parses an ISA name (case-sensitive) into *isa. */
SB_API sb_status sb_isa_parse(const char* name, sb_isa* isa);
/** The best ISA the CPU (and OS) supports, ignoring caps. Thread-safe. */
SB_API sb_isa sb_isa_detected(void);
/** The ISA kernels use now: the lower of the detected one and the cap. Thread-safe. */
SB_API sb_isa sb_isa_active(void);
/** 1 if kernels for `isa` can run on this CPU, else 0. */
SB_API int sb_isa_supported(sb_isa isa);
/** Caps the ISA of all later kernel calls, process-wide (like SPARSEBUDGET_MAX_ISA). A cap above
 * what the CPU has is not an error (the detected ISA is then used). Thread-safe. */
SB_API sb_status sb_isa_set_max(sb_isa cap);

/* ---- budgets ----------------------------------------------------------------------------- */

/** Element type of K and V (values equal sparsebudget::DType); queries and outputs are fp32.
 * SB_DTYPE_Q8_0 is ggml's q8_0 (per 32 values of a row: an fp16 scale, then 32 int8), read in
 * place; head_dim and every stride must then be multiples of 32 (strides count values). */
typedef enum sb_dtype {
  SB_DTYPE_F32 = 0,
  SB_DTYPE_F16 = 1,
  SB_DTYPE_BF16 = 2,
  SB_DTYPE_Q8_0 = 3
} sb_dtype;
/** Quantizes n fp32 values (n a positive multiple of 32) to q8_0 blocks at out (n / 32 * 34
 * bytes, any alignment), as sparsebudget::QuantizeQ8_0 (ggml's reference rule; its header gives
 * the round-trip bound, looser for blocks with max|x| below about 7.8e-3, whose fp16 scale is
 * subnormal). Errors (nothing written): SB_ERROR_INVALID_ARGUMENT for null pointers, a bad n, or
 * a value that is not finite or has |x| >= 65520 * 127 (about 8.32e6: the scale would overflow
 * fp16); the message names its index. O(n), allocates nothing, thread-safe. */
SB_API sb_status sb_quantize_q8_0(const float* in, int64_t n, void* out);
/** Block scoring for selection (values equal sparsebudget::Scoring): MEAN needs summaries with
 * keep_mean, BOUND (Quest's upper bound) needs keep_bound. */
typedef enum sb_scoring { SB_SCORING_MEAN = 0, SB_SCORING_BOUND = 1 } sb_scoring;
/** Which units share one block list (values equal sparsebudget::SelectionScope; attention.hpp's
 * selection rule): PER_KV_HEAD, each kv head its own list (the default); ALL_KV_HEADS, one list
 * per query block for every kv head, scores summed over all heads (decode then reads a kept
 * block once for all kv heads). */
typedef enum sb_selection_scope {
  SB_SELECTION_PER_KV_HEAD = 0,
  SB_SELECTION_ALL_KV_HEADS = 1
} sb_selection_scope;
/** How a budget sets the number of kept blocks (values equal sparsebudget::BudgetMode). */
typedef enum sb_budget_mode {
  SB_BUDGET_DENSE = 0,    /**< every causal block */
  SB_BUDGET_BLOCKS = 1,   /**< `blocks` scored blocks besides the sink and local ones */
  SB_BUDGET_FRACTION = 2, /**< ceil(fraction * causal_blocks) blocks in total */
  SB_BUDGET_TOP_P = 3     /**< fewest blocks whose estimated mass reaches top_p */
} sb_budget_mode;

/** A budget (sparsebudget::Budget; see budget.hpp for the counting rule; per-layer scales are a
 * layer-call argument, sb_layer_args.budget_scale). */
typedef struct sb_budget {
  size_t struct_size;   /**< sizeof(sb_budget) */
  sb_budget_mode mode;  /**< which of blocks / fraction / top_p applies; default dense */
  int32_t sink_blocks;  /**< >= 0, default 1 */
  int32_t local_blocks; /**< >= 0, default 1 (the query's own block is always kept) */
  int64_t blocks;       /**< SB_BUDGET_BLOCKS: scored blocks, >= 0 */
  double fraction;      /**< SB_BUDGET_FRACTION: in [0, 1] */
  double top_p;         /**< SB_BUDGET_TOP_P: in (0, 1] */
  int64_t min_blocks;   /**< clamp on the total, 0 = none */
  int64_t max_blocks;   /**< clamp on the total, 0 = none, >= min_blocks */
} sb_budget;

/** Sets struct_size and the defaults: dense, sink 1, local 1, fraction 1, top_p 0.9. */
SB_API void sb_budget_init(sb_budget* budget);
/** Checks every field; the message names the bad one. O(1). */
SB_API sb_status sb_budget_validate(const sb_budget* budget);

/** Output of sb_budget_resolve (sparsebudget::ResolvedBudget). */
typedef struct sb_resolved_budget {
  size_t struct_size; /**< set by the caller to sizeof(sb_resolved_budget); kept by the library */
  int64_t forced_blocks; /**< sink + local (+ own) blocks */
  int64_t total_blocks;  /**< forced + scored */
  int64_t scored_blocks; /**< chosen by score: total - forced */
  int32_t clamped;       /**< 1 if a clamp applied or more was asked than exists */
} sb_resolved_budget;

/** Blocks kept out of causal_blocks (>= 1) by a dense / blocks / fraction budget (top-p: the
 * clamp bounds applied to the forced count). O(1). */
SB_API sb_status sb_budget_resolve(const sb_budget* budget, int64_t causal_blocks,
                                   sb_resolved_budget* resolved);

/** A budget that keeps exactly total_blocks of causal_blocks (sparsebudget::Budget::Total): an
 * escalation rung (sb_escalation_step's total) or any count from elsewhere, with the request's
 * sink / local rule; dense when total_blocks >= causal_blocks. `budget->struct_size` must be set.
 * Errors (SB_ERROR_INVALID_ARGUMENT) name the bad value: causal_blocks < 1, total_blocks < 0,
 * sink_blocks or local_blocks < 0. O(1). */
SB_API sb_status sb_budget_for_total(int64_t total_blocks, int64_t causal_blocks,
                                     int32_t sink_blocks, int32_t local_blocks, sb_budget* budget);

/* ---- attention plan ---------------------------------------------------------------------- */

/** Shape, K/V type, scoring and budget of one attention call (sparsebudget::AttentionParams). */
typedef struct sb_attention_params {
  size_t struct_size;     /**< sizeof(sb_attention_params) */
  int32_t num_q_heads;    /**< >= 1 */
  int32_t num_kv_heads;   /**< divides num_q_heads */
  int32_t head_dim;       /**< [1, 4096]; fast paths for multiples of 16 */
  int32_t block_size;     /**< power of two in [16, 256], default 64 */
  int64_t context_length; /**< L >= num_queries */
  int32_t num_queries;    /**< >= 0 (1 = decode); 0 makes every execute call a no-op */
  sb_dtype kv_dtype;      /**< element type of K and V, default SB_DTYPE_F32 */
  sb_scoring scoring;     /**< default SB_SCORING_BOUND */
  float scale;            /**< 0 = 1/sqrt(head_dim) */
  sb_budget budget;       /**< budget.struct_size must be set too (sb_attention_params_init does) */
  /* Added after the first version (struct_size 112, which is still accepted: defaults apply). */
  sb_selection_scope selection_scope; /**< default SB_SELECTION_PER_KV_HEAD */
  int32_t reserved;                   /**< must be 0 (the init sets it); keeps the tail explicit */
} sb_attention_params;

/** Sets struct_size (and budget.struct_size) and defaults: block_size 64, num_queries 1, f32,
 * bound scoring, scale 0, dense budget; heads, head_dim and context_length are 0 (must be set). */
SB_API void sb_attention_params_init(sb_attention_params* params);

/** A validated plan: a small heap object holding the precomputed work split. */
typedef struct sb_plan sb_plan;

/** Validates every field (the message names the bad one) and creates a plan. O(1); one small
 * allocation. *plan is set to NULL on failure. */
SB_API sb_status sb_plan_create(const sb_attention_params* params, sb_plan** plan);
/** Frees a plan; NULL is a no-op. No call may still be using it. */
SB_API void sb_plan_destroy(sb_plan* plan);

/** Output of sb_plan_get_info: what the plan precomputed. */
typedef struct sb_plan_info {
  size_t struct_size;        /**< set by the caller to sizeof(sb_plan_info); kept by the library */
  size_t workspace_bytes;    /**< bytes of workspace every execute call of this plan needs */
  int64_t num_blocks;        /**< causal blocks of the last query, ceil(L / block_size) */
  int64_t num_query_blocks;  /**< query blocks touched by the queries */
  int64_t first_query_block; /**< query block of the first query */
  int64_t num_units;         /**< num_kv_heads * num_query_blocks: rows of a block selection */
  int32_t group;             /**< num_q_heads / num_kv_heads */
  float scale;               /**< the softmax scale used */
} sb_plan_info;

/** Fills *info (up to info->struct_size bytes). O(1). */
SB_API sb_status sb_plan_get_info(const sb_plan* plan, sb_plan_info* info);
/** Shortcut: *bytes = workspace bytes (may be 0; then workspace may be NULL). The workspace needs
 * no particular alignment beyond 4 bytes; 64-byte alignment is faster. */
SB_API sb_status sb_plan_workspace_bytes(const sb_plan* plan, size_t* bytes);

/* ---- views ------------------------------------------------------------------------------- */

/** K and V of one request. Element (kv head h, token t, dim d) of K lives at (in elements)
 *   contiguous (page_table NULL): k + t*token_stride + h*head_stride + d
 *   paged:  k + page_table[t / page_size]*page_stride + (t % page_size)*token_stride
 *             + h*head_stride + d
 * and V likewise with the same strides. head_dim is contiguous. In the paged layout page_size
 * must be a positive multiple of block_size (so a block never straddles pages), page_table has
 * ceil(context_length / page_size) entries, each in [0, num_pages), and pages must not overlap.
 * Paged and contiguous layouts give bit-identical results. bf16 and f16 values are raw 16-bit
 * patterns. */
typedef struct sb_kv_view {
  size_t struct_size;   /**< sizeof(sb_kv_view) */
  const void* k;        /**< K, elements of `dtype` */
  const void* v;        /**< V, same layout and strides as K (not read by sb_summaries_append) */
  sb_dtype dtype;       /**< must equal the plan's kv_dtype */
  int64_t token_stride; /**< elements between consecutive tokens (within a page), >= 0 */
  int64_t head_stride;  /**< elements between consecutive kv heads, >= 0 */
  const int32_t* page_table; /**< NULL = contiguous */
  int64_t page_size;         /**< tokens per page */
  int64_t page_stride;       /**< elements between pages */
  int64_t num_pages;         /**< paged: pages in the pool k and v point into, >= 1; every
                              * page_table entry must be in [0, num_pages) (checked: the
                              * library cannot see the pool) */
} sb_kv_view;

/** fp32 queries: row (query i, q head h) at data + i*token_stride + h*head_stride (elements);
 * query i sits at position context_length - num_queries + i. */
typedef struct sb_query_view {
  size_t struct_size;   /**< sizeof(sb_query_view) */
  const float* data;    /**< row (query 0, q head 0) */
  int64_t token_stride; /**< floats between consecutive queries, >= 0 */
  int64_t head_stride;  /**< floats between consecutive q heads, >= 0 */
} sb_query_view;

/** fp32 outputs, laid out like the queries; written, never read. */
typedef struct sb_output_view {
  size_t struct_size;   /**< sizeof(sb_output_view) */
  float* data;          /**< row (query 0, q head 0); rows must not overlap */
  int64_t token_stride; /**< floats between consecutive queries, >= 0 */
  int64_t head_stride;  /**< floats between consecutive q heads, >= 0 */
} sb_output_view;

/** Chosen blocks. Unit u = kv_head * num_query_blocks + (query_block - first_query_block);
 * indices[u*capacity .. u*capacity + counts[u]) are its kept blocks in ascending order, and
 * 1 <= counts[u] <= the unit's causal blocks. capacity >= num_blocks, and num_units * capacity
 * must not overflow (SB_ERROR_OUT_OF_RANGE). Written by sb_select_blocks, read by the attend calls. */
typedef struct sb_block_selection {
  size_t struct_size; /**< sizeof(sb_block_selection) */
  int32_t* indices;   /**< num_units * capacity */
  int32_t* counts;    /**< num_units */
  int64_t capacity;   /**< entries per unit in `indices`, >= num_blocks */
} sb_block_selection;

/** Counters of a selection (sparsebudget::SelectionStats without dense_fallback). */
typedef struct sb_selection_stats {
  size_t struct_size; /**< set by the caller to sizeof(sb_selection_stats); kept by the library */
  int64_t units;      /**< units selected (the plan's num_units) */
  int64_t units_clamped; /**< units whose budget was clamped or asked for more than exists */
  int64_t kept_blocks;   /**< sum over units */
  int64_t causal_blocks; /**< sum over units: kept / causal = density */
  int32_t dense;         /**< 1 if every unit kept every causal block */
} sb_selection_stats;

/** Checks that the views cover the plan's shape (rows do not overlap, extents do not overflow,
 * every page table entry lies in [0, num_pages)). O(pages). `out` may be NULL. The execute calls
 * run it themselves; this is for engines that want to check once up front. */
SB_API sb_status sb_validate_views(const sb_plan* plan, const sb_query_view* q,
                                   const sb_kv_view* kv, const sb_output_view* out);

/* ---- block summaries --------------------------------------------------------------------- */

/** Shape and contents of block summaries (sparsebudget::BlockSummaries::Config). */
typedef struct sb_summaries_config {
  size_t struct_size;   /**< sizeof(sb_summaries_config) */
  int32_t num_kv_heads; /**< >= 1, must equal the plan's */
  int32_t head_dim;     /**< in [1, 4096], must equal the plan's */
  int32_t block_size;   /**< must equal the plan's */
  int64_t max_tokens;   /**< capacity: memory is sized for this at create time */
  int32_t keep_mean;    /**< nonzero: keep sums for SB_SCORING_MEAN (and probes) */
  int32_t keep_bound;   /**< nonzero: keep min/max for SB_SCORING_BOUND */
} sb_summaries_config;

/** Sets struct_size and defaults: block_size 64, keep_mean 1, keep_bound 1, the rest 0. */
SB_API void sb_summaries_config_init(sb_summaries_config* config);

/** Per-block key summaries of one request's K (all kv heads). */
typedef struct sb_summaries sb_summaries;

/** Allocates fp32 storage for max_tokens (the only allocation: (keep_mean + 2*keep_bound) *
 * num_kv_heads * ceil(max_tokens/block_size) * head_dim floats). *summaries NULL on failure. */
SB_API sb_status sb_summaries_create(const sb_summaries_config* config, sb_summaries** summaries);
/** Frees the summaries (invalidating sb_summaries_block pointers); NULL is a no-op. */
SB_API void sb_summaries_destroy(sb_summaries* summaries);
/** Folds tokens [num_tokens, new_num_tokens) of kv->k into the summaries (reads only those).
 * O(new tokens x heads x head_dim). Only kv->k, dtype, strides and the page fields are used. */
SB_API sb_status sb_summaries_append(sb_summaries* summaries, const sb_kv_view* kv,
                                     int64_t new_num_tokens);
/** Forgets all tokens (keeps the memory). */
SB_API sb_status sb_summaries_reset(sb_summaries* summaries);
/** *num_tokens = tokens folded in so far. */
SB_API sb_status sb_summaries_num_tokens(const sb_summaries* summaries, int64_t* num_tokens);
/** Storage bytes. */
SB_API sb_status sb_summaries_bytes(const sb_summaries* summaries, size_t* bytes);
/** Pointers (owned by the summaries, valid until append/reset/destroy) to head_dim floats of block
 * `block` of kv head `head`: the key sum, min and max. Any output pointer may be NULL; a kind not
 * kept yields NULL. *count receives the tokens folded into the block (may be NULL). */
SB_API sb_status sb_summaries_block(const sb_summaries* summaries, int32_t head, int64_t block,
                                    const float** key_sum, const float** key_min,
                                    const float** key_max, int64_t* count);

/* ---- execute ----------------------------------------------------------------------------- */

/** A persistent thread pool for the convenience paths (threads created here, joined at destroy).
 * num_threads >= 1 counts the calling thread. One call at a time per pool (serialised). */
typedef struct sb_thread_pool sb_thread_pool;
/** Creates a pool; num_threads in [1, 4096], the caller included (num_threads - 1 workers).
 * SB_ERROR_INTERNAL (naming how many started) when the OS cannot start them all; the workers
 * already started are joined first. *pool NULL on failure. */
SB_API sb_status sb_thread_pool_create(int32_t num_threads, sb_thread_pool** pool);
/** Joins the workers and frees the pool; NULL is a no-op. No call may still be using it. */
SB_API void sb_thread_pool_destroy(sb_thread_pool* pool);

/** Selects blocks for every unit with the plan's budget and scoring (see attention.hpp for the
 * exact rule). The summaries must cover context_length tokens and keep the plan's scoring kind.
 * `stats` may be NULL. Workspace: sb_plan_workspace_bytes. Allocates nothing, spawns nothing.
 * O(units x blocks x rows x head_dim). */
SB_API sb_status sb_select_blocks(const sb_plan* plan, const sb_query_view* q,
                                  const sb_summaries* summaries,
                                  const sb_block_selection* selection, void* workspace,
                                  sb_selection_stats* stats);

/** Attention of every query over the blocks in `selection` (NULL = dense: every causal block).
 * Validates views and selection, then runs on the calling thread, or on `pool` if not NULL.
 * Allocates nothing. */
SB_API sb_status sb_attend(const sb_plan* plan, const sb_query_view* q, const sb_kv_view* kv,
                           const sb_block_selection* selection, const sb_output_view* out,
                           void* workspace, sb_thread_pool* pool);

/** The same work split for an engine's own threads; spawns nothing. Call sb_attend_partition with
 * ith = 0..nth-1 (on any threads), then, once ALL have returned (a barrier), sb_attend_merge with
 * the same ith/nth range. Same plan, views, selection and workspace for both phases; the outputs
 * are bit-identical for every nth. Each partition call validates the views and the selection
 * (O(pages + kept blocks)), so an error is reported by every ith; after an error in either
 * phase the output is unspecified. */
SB_API sb_status sb_attend_partition(const sb_plan* plan, const sb_query_view* q,
                                     const sb_kv_view* kv, const sb_block_selection* selection,
                                     const sb_output_view* out, void* workspace, int32_t ith,
                                     int32_t nth);
/** Phase two of the partitioned attend (see sb_attend_partition): combines the split-K partial
 * results in `workspace` into `out`. q and kv are not needed. */
SB_API sb_status sb_attend_merge(const sb_plan* plan, const sb_block_selection* selection,
                                 const sb_output_view* out, void* workspace, int32_t ith,
                                 int32_t nth);

/** Fused select + attend with the plan's budget. `summaries` may be NULL only for a dense budget.
 * `pool`, `stats` and `selection_out` (receives the chosen blocks) may be NULL. */
SB_API sb_status sb_sparse_attention(const sb_plan* plan, const sb_query_view* q,
                                     const sb_kv_view* kv, const sb_summaries* summaries,
                                     const sb_output_view* out, void* workspace,
                                     sb_thread_pool* pool, sb_selection_stats* stats,
                                     const sb_block_selection* selection_out);

/* ---- request features, predictors, probes ------------------------------------------------ */

/** What a predictor sees about one request (sparsebudget::RequestFeatures). Unknown optional
 * values are NaN (sb_request_features_init sets them so). Named arrays are borrowed for the
 * duration of a call. */
typedef struct sb_request_features {
  size_t struct_size;            /**< sizeof(sb_request_features) */
  int64_t context_length;        /**< >= 1 */
  int32_t block_size;            /**< default 64 */
  const char* task;              /**< NULL = "unknown" */
  double expected_output_length; /**< NaN = unknown */
  double entropy;                /**< of the next-token distribution, nats, >= 0; NaN = unknown */
  double top1_prob;              /**< in [0, 1]; NaN = unknown */
  double probe_blocks_50; /**< blocks for 50% of the estimated mass (probe.hpp); NaN = unknown */
  double probe_blocks_90; /**< the same for 90%; NaN = unknown */
  double probe_blocks_99; /**< the same for 99%; NaN = unknown */
  double probe_entropy;   /**< entropy of the block mass, nats; NaN = unknown */
  double probe_top5_mass; /**< mass of the heaviest 5% of blocks, in [0, 1]; NaN = unknown */
  int32_t num_task_probs; /**< task_prob_names/values: probabilities over task classes */
  const char* const* task_prob_names; /**< num_task_probs class names, distinct */
  const double* task_prob_values;     /**< num_task_probs probabilities, each in [0, 1] */
  int32_t num_extra;                  /**< extra_names/values: other numeric features */
  const char* const* extra_names;     /**< num_extra feature names, distinct */
  const double* extra_values;         /**< num_extra finite values */
} sb_request_features;

/** Sets struct_size and defaults: block_size 64, task NULL, every optional value NaN, no named
 * arrays; context_length is 0 and must be set. */
SB_API void sb_request_features_init(sb_request_features* features);

/** Output of sb_predictor_predict (sparsebudget::Prediction). */
typedef struct sb_prediction {
  size_t struct_size; /**< sizeof(sb_prediction) */
  sb_budget budget; /**< the kernel's input (SB_BUDGET_FRACTION); struct_size set by the library */
  double estimate_blocks; /**< the predictor's estimate of total blocks, before limits */
  int64_t causal_blocks;  /**< ceil(context_length / block_size) */
  int64_t total_blocks;   /**< blocks the kernel keeps with `budget` */
  double fraction;        /**< total_blocks / causal_blocks */
  int32_t clamped;        /**< 1 if a limit changed the estimate */
  int32_t fallback;       /**< 1 if a needed feature was unknown and the fallback was used */
} sb_prediction;

/** A loaded predictor (immutable; predict is thread-safe). */
typedef struct sb_predictor sb_predictor;

/** From a JSON file ({"schema_version": 1, "type": ..., ...}, see docs/predictors.md).
 * Errors name the file and the bad key. *predictor NULL on failure. */
SB_API sb_status sb_predictor_load_file(const char* path, sb_predictor** predictor);
/** The same from NUL-terminated JSON text. Errors name the bad key. *predictor NULL on failure. */
SB_API sb_status sb_predictor_load_json(const char* json_text, sb_predictor** predictor);
/** Frees a predictor; NULL is a no-op. No call may still be using it. */
SB_API void sb_predictor_destroy(sb_predictor* predictor);
/** Type name ("length_law", ...), owned by the predictor. NULL for a NULL predictor. */
SB_API const char* sb_predictor_type(const sb_predictor* predictor);
/** The predictor's JSON document. Writes at most `capacity` bytes (NUL included) into buffer
 * (may be NULL with capacity 0) and the full length without the NUL into *length; if capacity
 * is too small, returns SB_ERROR_OUT_OF_RANGE after setting *length (buffer is not written). */
SB_API sb_status sb_predictor_to_json(const sb_predictor* predictor, char* buffer, size_t capacity,
                                      size_t* length);
/** Validates the features and predicts the budget. Thread-safe, O(parameters). */
SB_API sb_status sb_predictor_predict(const sb_predictor* predictor,
                                      const sb_request_features* features,
                                      sb_prediction* prediction);

/** Probe statistics (sparsebudget::ProbeStats; definitions in probe.hpp). */
typedef struct sb_probe_stats {
  size_t struct_size; /**< set by the caller to sizeof(sb_probe_stats); kept by the library */
  double blocks_50;   /**< blocks for 50% of the mass (from summaries: mean over heads) */
  double blocks_90;   /**< the same for 90% */
  double blocks_99;   /**< the same for 99% */
  double entropy;     /**< of the block mass, nats */
  double top5_mass;   /**< mass of the heaviest 5% of blocks */
  int64_t num_blocks; /**< blocks scored */
} sb_probe_stats;

/** Probe statistics of the last query from mean summaries (see probe.hpp). q: num_q_heads rows of
 * head_dim floats, q_head_stride apart. scale 0 = 1/sqrt(head_dim). O(heads x blocks x head_dim);
 * allocates. */
SB_API sb_status sb_probe_from_summaries(const sb_summaries* summaries, const float* q,
                                         int64_t q_head_stride, int32_t num_q_heads, float scale,
                                         sb_probe_stats* stats);
/** From num_scores block scores of one head, with scale_over_rows = scale / rows. */
SB_API sb_status sb_probe_from_scores(const double* scores, int64_t num_scores,
                                      double scale_over_rows, sb_probe_stats* stats);
/** Copies the statistics into the probe_* fields of *features. */
SB_API sb_status sb_probe_set_features(const sb_probe_stats* stats, sb_request_features* features);

/* ---- escalation: the self-check under sparsity (escalation.hpp) ------------------------------ */

/** Threshold + budget ladder (immutable; every call on it is thread-safe, allocation-free). */
typedef struct sb_escalation_policy sb_escalation_policy;

/** How the policy reacts to an unsure token (EscalationMode). */
typedef enum sb_escalation_mode {
  SB_ESCALATE_RECOMPUTE_STEP = 0, /**< recompute that step at the next rung, continue there */
  SB_ESCALATE_RESTART_ANSWER = 1, /**< decode the answer again from the next rung */
  SB_ESCALATE_FIRST_TOKEN = 2     /**< check only the answer's first token */
} sb_escalation_mode;

/** What to do after a decode step (sb_escalation_step). */
typedef enum sb_escalation_action {
  SB_ESCALATION_CONTINUE = 0,  /**< keep the token, go on at the same budget */
  SB_ESCALATION_RECOMPUTE = 1, /**< recompute this step at the new budget */
  SB_ESCALATION_RESTART = 2    /**< drop the answer's tokens, decode it again at the new budget */
} sb_escalation_action;

/** threshold in [0, 1] (0 never escalates); ladder: num_rungs (1..64) ascending fractions in
 * (0, 1], the last 1. Errors name the bad value. *policy NULL on failure. */
SB_API sb_status sb_escalation_policy_create(double threshold, const double* ladder,
                                             int32_t num_rungs, sb_escalation_mode mode,
                                             sb_escalation_policy** policy);
/** The policy of an "escalate" predictor (a calibrated file made with --escalation), copied;
 * SB_ERROR_NOT_FOUND for any other predictor. *policy NULL on failure. */
SB_API sb_status sb_predictor_escalation_policy(const sb_predictor* predictor,
                                                sb_escalation_policy** policy);
/** Frees a policy; NULL is a no-op. */
SB_API void sb_escalation_policy_destroy(sb_escalation_policy* policy);
/** The threshold (NaN for a NULL policy). */
SB_API double sb_escalation_policy_threshold(const sb_escalation_policy* policy);

/** Per-request state, owned by the caller (one per request). */
typedef struct sb_escalation_state {
  size_t struct_size;    /**< sizeof(sb_escalation_state) */
  int64_t total_blocks;  /**< the budget the request decodes at now, in total kept blocks */
  int64_t causal_blocks; /**< of the request's decode step */
  int32_t escalations;   /**< steps recomputed so far (saturates at INT32_MAX) */
} sb_escalation_state;

/** Starts a request at a prediction's budget (total_blocks, causal_blocks). */
SB_API sb_status sb_escalation_start(const sb_escalation_policy* policy,
                                     const sb_prediction* prediction, sb_escalation_state* state);
/** After decoding the answer's token number answer_position (0-based) with probability
 * top1_prob under state->total_blocks: *action says what to redo at *total_blocks (the next
 * rung, counted with `sink`/`local` forced blocks; the state moves there), or
 * SB_ESCALATION_CONTINUE with *total_blocks unchanged. */
SB_API sb_status sb_escalation_step(const sb_escalation_policy* policy, sb_escalation_state* state,
                                    double top1_prob, int64_t answer_position, int32_t sink_blocks,
                                    int32_t local_blocks, sb_escalation_action* action,
                                    int64_t* total_blocks);

/** Logit features (sparsebudget::LogitStats): entropy (nats) and top-1 probability of
 * softmax(logits). */
typedef struct sb_logit_stats {
  size_t struct_size; /**< set by the caller to sizeof(sb_logit_stats); kept by the library */
  double entropy;     /**< -sum p ln p, nats */
  double top1_prob;   /**< max p */
} sb_logit_stats;
/** From n fp32 logits (float64 accumulation; errors on NaN/+inf or no finite logit). O(n), no
 * allocation. */
SB_API sb_status sb_logit_stats_compute(const float* logits, int64_t n, sb_logit_stats* stats);
/** The traces' probe features: sb_probe_from_summaries of each of num_layers layers, averaged over
 * layers (sparsebudget::ProbeStatsFromLayers). summaries[l], last_q[l]: layer l's. */
SB_API sb_status sb_probe_from_layers(const sb_summaries* const* summaries,
                                      const float* const* last_q, int32_t num_layers,
                                      int64_t q_head_stride, int32_t num_q_heads, float scale,
                                      sb_probe_stats* stats);

/* ---- the engine API: one op per model, one step plan per step, one call per layer ---------- */
/* (sparsebudget/op.hpp; docs/guide/engine-integration.md shows the loop.)
 *   sb_op_create(config)                      once per model: captures the kernels (one ISA)
 *   sb_step_plan_create(max_requests)         once per engine: the only allocation
 *   per step:  sb_op_plan(op, requests, n, plan)           validates every request once
 *   per layer: sb_op_run_layer(op, plan, &args, pool, &st)  or the three phases (ith, nth)
 * Nothing allocates per step (up to max_requests) or per layer. */

/** Static configuration of one model's attention (sparsebudget::AttentionOpConfig). */
typedef struct sb_op_config {
  size_t struct_size;   /**< sizeof(sb_op_config) */
  int32_t num_q_heads;  /**< >= 1 */
  int32_t num_kv_heads; /**< divides num_q_heads */
  int32_t head_dim;     /**< [1, 4096] */
  int32_t block_size;   /**< power of two in [16, 256], default 64 */
  sb_dtype kv_dtype;    /**< default SB_DTYPE_F32 */
  sb_scoring scoring;   /**< default SB_SCORING_BOUND */
  float scale;          /**< 0 = 1/sqrt(head_dim) */
  /* The first version ends here (struct_size 40, still accepted: defaults apply); its 4 tail
   * bytes were padding, so the library ignores this field whatever it holds. */
  int32_t padding0;
  sb_selection_scope selection_scope; /**< default SB_SELECTION_PER_KV_HEAD */
  int32_t reserved;                   /**< must be 0 (the init sets it); keeps the tail explicit */
} sb_op_config;
/** Sets struct_size and the defaults (block 64, f32, bound, scale 0; heads and head_dim 0). */
SB_API void sb_op_config_init(sb_op_config* config);

/** An attention op (opaque). Const after creation: any number of threads may use it. */
typedef struct sb_op sb_op;
/** Validates the configuration and captures the kernel table of the active ISA. One small
 * allocation. *op NULL on failure. */
SB_API sb_status sb_op_create(const sb_op_config* config, sb_op** op);
/** Frees an op; NULL is a no-op. */
SB_API void sb_op_destroy(sb_op* op);
/** *isa = the ISA every call on this op runs. */
SB_API sb_status sb_op_isa(const sb_op* op, sb_isa* isa);

/** One request of a step. kv gives the LAYOUT (dtype, strides, page table, num_pages; kv.k and
 * kv.v are ignored); the page table must stay valid until the step's last layer call. */
typedef struct sb_step_request {
  size_t struct_size;       /**< sizeof(sb_step_request) */
  int64_t context_length;   /**< tokens in the cache, this step's queries included */
  int32_t num_queries;      /**< the last num_queries positions; default 1; 0 = skip */
  sb_budget budget;         /**< this request's budget (budget.struct_size set by the init) */
  sb_kv_view kv;            /**< K/V layout (kv.struct_size set by the init) */
  int64_t q_token_stride;   /**< floats between queries */
  int64_t q_head_stride;    /**< floats between q heads */
  int64_t out_token_stride; /**< floats between output rows of consecutive queries */
  int64_t out_head_stride;  /**< floats between output heads */
} sb_step_request;
/** Sets struct_size (and budget's, kv's) and the defaults: one query, dense budget, f32. */
SB_API void sb_step_request_init(sb_step_request* request);

/** The most requests one step may carry (sparsebudget::kMaxStepRequests). */
#define SB_MAX_STEP_REQUESTS 65536

/** A step plan (opaque): the validated batch of one step, reused by every layer. */
typedef struct sb_step_plan sb_step_plan;
/** Creates a plan with room for max_requests in [0, SB_MAX_STEP_REQUESTS]: sb_op_plan never
 * allocates up to that. */
SB_API sb_status sb_step_plan_create(int32_t max_requests, sb_step_plan** plan);
/** Frees a plan; NULL is a no-op. */
SB_API void sb_step_plan_destroy(sb_step_plan* plan);
/** Validates every request (the message names the request and the bad value) and fills `plan`;
 * n in [0, SB_MAX_STEP_REQUESTS]. O(requests + pages). Allocates only when n exceeds every earlier batch (and max_requests). */
SB_API sb_status sb_op_plan(const sb_op* op, const sb_step_request* requests, int32_t n,
                            sb_step_plan* plan);
/** The workspace every layer call of this step needs: *bytes (may be 0) and *alignment (64). */
SB_API sb_status sb_step_plan_workspace(const sb_step_plan* plan, size_t* bytes, size_t* alignment);

/** One request's pointers for one layer. A plain array element (no struct_size): its layout is
 * fixed in this ABI version. lse (optional): [num_queries][num_q_heads] log-sum-exp of the scaled
 * scores over the attended keys, for sb_merge_states. summaries may be NULL only for a request
 * that runs dense in this layer. */
typedef struct sb_layer_input {
  const float* q;                /**< queries (the request's q strides) */
  float* out;                    /**< outputs (the request's out strides) */
  const void* k;                 /**< this layer's K (the request's layout) */
  const void* v;                 /**< this layer's V */
  const sb_summaries* summaries; /**< this layer's summaries of the request */
  float* lse;                    /**< optional, NULL = none */
} sb_layer_input;

/** What changes per layer. */
typedef struct sb_layer_args {
  size_t struct_size;           /**< sizeof(sb_layer_args) */
  const sb_layer_input* inputs; /**< one per request of the plan, in order */
  double budget_scale;         /**< this layer's multiplier of blocks/fraction budgets; default 1 */
  void* workspace;             /**< sb_step_plan_workspace bytes, 64-byte aligned */
  int32_t measure_kernel_time; /**< nonzero: fill sb_layer_stats.kernel_ns */
} sb_layer_args;
/** Sets struct_size and budget_scale 1; the rest 0. */
SB_API void sb_layer_args_init(sb_layer_args* args);

/** Counters of one layer call (sparsebudget::LayerStats). */
typedef struct sb_layer_stats {
  size_t struct_size;     /**< set by the caller to sizeof(sb_layer_stats); kept by the library */
  int64_t units;          /**< (kv head, query block) units over all requests */
  int64_t units_clamped;  /**< units whose budget was clamped */
  int64_t kept_blocks;    /**< sum over units */
  int64_t causal_blocks;  /**< sum over units */
  int32_t dense_requests; /**< requests run dense in this layer */
  int64_t kernel_ns;      /**< time inside select/attend work items (with measure_kernel_time) */
} sb_layer_stats;

/** Select + attend of every request for one layer (on `pool` if not NULL). `stats` may be NULL.
 * Checks only pointers, the scale and the summaries (O(requests)); allocates nothing. */
SB_API sb_status sb_op_run_layer(const sb_op* op, const sb_step_plan* plan,
                                 const sb_layer_args* args, sb_thread_pool* pool,
                                 sb_layer_stats* stats);
/** The same on the engine's own threads: sb_op_select_phase on ith = 0..nth-1, a barrier,
 * sb_op_attend_phase on all ith, a barrier, sb_op_merge_phase on all ith. Same args for all. */
SB_API sb_status sb_op_select_phase(const sb_op* op, const sb_step_plan* plan,
                                    const sb_layer_args* args, int32_t ith, int32_t nth,
                                    sb_layer_stats* stats);
SB_API sb_status sb_op_attend_phase(const sb_op* op, const sb_step_plan* plan,
                                    const sb_layer_args* args, int32_t ith, int32_t nth,
                                    sb_layer_stats* stats);
SB_API sb_status sb_op_merge_phase(const sb_op* op, const sb_step_plan* plan,
                                   const sb_layer_args* args, int32_t ith, int32_t nth);

/** Folds a partial attention state (v_other, lse_other) into (v, lse) for `rows` rows of head_dim
 * floats (sparsebudget::MergeAttentionStates): attention over disjoint key sets merges into
 * attention over their union. head_dim in [1, 4096]; with rows > 1 each stride >= head_dim;
 * SB_ERROR_OUT_OF_RANGE when rows x stride overflows the address space. */
SB_API sb_status sb_merge_states(int64_t rows, int32_t head_dim, const float* v_other,
                                 int64_t v_other_stride, const float* lse_other, float* v,
                                 int64_t v_stride, float* lse);

#ifdef __cplusplus
} /**< extern "C" */
#endif

#endif /**< SPARSEBUDGET_SPARSEBUDGET_H_ */