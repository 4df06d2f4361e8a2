// Dense last-token logits of the small model for a file of prompts (one JSON array of token
// ids per line), written as a float32 .npy [prompts, vocab]. Used by check_vs_torch.py.
//   tiny_model_logits MODEL_DIR PROMPTS.jsonl OUT.npy
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "tiny_model.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR PROMPTS.jsonl OUT.npy\n", argv[0]);
    return 2;
  }
  auto model = tinymodel::Model::Load(argv[1]);
  if (!model.ok()) return std::fprintf(stderr, "%s\n", model.status().ToString().c_str()), 1;
  std::ifstream in(argv[2]);
  if (!in) return std::fprintf(stderr, "cannot open %s\n", argv[2]), 1;
  sparsebudget::ThreadPool pool(2);
  std::vector<float> all;
  std::string line;
  size_t rows = 0;
  const int V = (*model)->config().vocab_size;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto tokens = nlohmann::json::parse(line).get<std::vector<int32_t>>();
    tinymodel::Session s(*model, static_cast<int64_t>(tokens.size()), 64, &pool);
    auto logits = s.Prefill(tokens);
    if (!logits.ok()) return std::fprintf(stderr, "line %zu: %s\n", rows + 1, logits.status().ToString().c_str()), 1;
    all.insert(all.end(), logits->begin(), logits->end());
    ++rows;
  }
  // .npy v1.0: magic, version, header length, a Python dict literal padded to 64 bytes.
  std::string header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " + std::to_string(V) + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::ofstream out(argv[3], std::ios::binary);
  const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(reinterpret_cast<const char*>(magic), 8);
  const uint16_t hl = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&hl), 2);
  out << header;
  out.write(reinterpret_cast<const char*>(all.data()), static_cast<std::streamsize>(all.size() * 4));
  return out ? 0 : 1;
}
