// Block summaries: running per-block key sums (mean scoring) and min/max (bound scoring).
#include <new>
#include <string>

#include "attention/internal.hpp"
#include "core/checked.hpp"
#include "kernels/kernels.hpp"

namespace sparsebudget {

Expected<BlockSummaries> BlockSummaries::Create(const Config& c) {
  auto bad = [](const std::string& m) { return Status(StatusCode::kInvalidArgument, m); };
  if (c.num_kv_heads < 1) return bad("num_kv_heads must be >= 1, got " + std::to_string(c.num_kv_heads));
  if (c.head_dim < 1 || c.head_dim > 4096)
    return bad("head_dim must be in [1, 4096], got " + std::to_string(c.head_dim));
  if (c.block_size < 16 || c.block_size > 256 || (c.block_size & (c.block_size - 1)) != 0)
    return bad("block_size must be a power of two in [16, 256], got " + std::to_string(c.block_size));
  if (c.max_tokens < 0) return bad("max_tokens must be >= 0, got " + std::to_string(c.max_tokens));
  if (!c.mean && !c.bound) return bad("summaries must keep mean, bound or both");
  BlockSummaries s;
  s.config_ = c;
  s.max_blocks_ = detail::CeilDiv(c.max_tokens, c.block_size);
  uint64_t per_kind;
  if (!detail::CheckedMul(static_cast<uint64_t>(s.max_blocks_),
                          static_cast<uint64_t>(c.num_kv_heads) * static_cast<uint64_t>(c.head_dim), &per_kind) ||
      per_kind > (uint64_t{1} << 40))
    return Status(StatusCode::kOutOfRange,
                  "summaries for max_tokens " + std::to_string(c.max_tokens) + " are too large");
  const size_t n = static_cast<size_t>(per_kind);
  size_t total = 0;
  if (c.mean) {
    s.sum_offset_ = total;
    total += n;
  }
  if (c.bound) {
    s.min_offset_ = total;
    total += n;
    s.max_offset_ = total;
    total += n;
  }
  try {
    s.storage_.assign(total, 0.0f);  // the one allocation; its failure is a status, not a throw
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal, "summaries for max_tokens " + std::to_string(c.max_tokens) +
                                             ": cannot allocate " + std::to_string(total * sizeof(float)) + " bytes");
  }
  return s;
}

int64_t BlockSummaries::num_blocks() const noexcept { return detail::CeilDiv(num_tokens_, config_.block_size); }

const float* BlockSummaries::key_sum(int32_t head, int64_t block) const noexcept {
  if (!config_.mean) return nullptr;
  return storage_.data() + sum_offset_ +
         (static_cast<size_t>(head) * static_cast<size_t>(max_blocks_) + static_cast<size_t>(block)) *
             static_cast<size_t>(config_.head_dim);
}
const float* BlockSummaries::key_min(int32_t head, int64_t block) const noexcept {
  if (!config_.bound) return nullptr;
  return storage_.data() + min_offset_ +
         (static_cast<size_t>(head) * static_cast<size_t>(max_blocks_) + static_cast<size_t>(block)) *
             static_cast<size_t>(config_.head_dim);
}
const float* BlockSummaries::key_max(int32_t head, int64_t block) const noexcept {
  if (!config_.bound) return nullptr;
  return storage_.data() + max_offset_ +
         (static_cast<size_t>(head) * static_cast<size_t>(max_blocks_) + static_cast<size_t>(block)) *
             static_cast<size_t>(config_.head_dim);
}

int64_t BlockSummaries::block_count(int64_t block) const noexcept {
  const int64_t rest = num_tokens_ - block * config_.block_size;
  if (rest <= 0) return 0;
  return rest < config_.block_size ? rest : config_.block_size;
}

size_t BlockSummaries::bytes() const noexcept { return storage_.size() * sizeof(float); }

Status BlockSummaries::Append(const KVCacheView& kv, int64_t new_num_tokens) {
  auto bad = [](const std::string& m) { return Status(StatusCode::kInvalidArgument, m); };
  if (new_num_tokens < num_tokens_ || new_num_tokens > config_.max_tokens)
    return Status(StatusCode::kOutOfRange, "new_num_tokens " + std::to_string(new_num_tokens) +
                                               " must be in [num_tokens " + std::to_string(num_tokens_) +
                                               ", max_tokens " + std::to_string(config_.max_tokens) + "]");
  if (new_num_tokens == num_tokens_) return OkStatus();
  if (kv.k == nullptr) return bad("kv.k is null");
  const auto dt = static_cast<int>(kv.dtype);
  if (dt < 0 || dt > 3) return bad("kv.dtype is not a DType: " + std::to_string(dt));
  if (kv.dtype == DType::kQ8_0 && config_.head_dim % kQ8_0BlockValues != 0)
    return bad("q8_0 K needs a head_dim that is a multiple of 32, got " + std::to_string(config_.head_dim));
  // The same layout rules as ValidateViews (q8_0 stride multiples included), for the tokens read here.
  if (Status st = detail::CheckKvLayout(kv, num_tokens_, new_num_tokens, config_.num_kv_heads, config_.head_dim,
                                        config_.block_size);
      !st.ok())
    return st;
  const int32_t B = config_.block_size;
  const kernels::KernelTable& kt = kernels::Kernels();
  for (int32_t h = 0; h < config_.num_kv_heads; ++h) {
    for (int64_t t = num_tokens_; t < new_num_tokens; ++t) {
      const int64_t block = t / B;
      const kernels::BlockPtr bp = kernels::BlockAddress(kv, h, block, B);
      const char* key = bp.k + kernels::ValueBytes(kv.dtype, (t % B) * kv.token_stride);
      kt.summary_add(key, kv.dtype, config_.head_dim, const_cast<float*>(key_sum(h, block)),
                     const_cast<float*>(key_min(h, block)), const_cast<float*>(key_max(h, block)), t % B == 0);
    }
  }
  num_tokens_ = new_num_tokens;
  return OkStatus();
}

}  // namespace sparsebudget
