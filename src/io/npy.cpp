// Minimal .npy reader/writer (float32 / float16, little-endian, C order).
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/checked.hpp"
#include "io/json_util.hpp"
#include "sparsebudget/attention.hpp"
#include "sparsebudget/calibration.hpp"

namespace sparsebudget {

namespace {

// Value of 'key': ... in the header dict (text up to the next ',' or '}' at depth 0).
bool HeaderField(const std::string& h, const std::string& key, std::string* out) {
  const std::string k1 = "'" + key + "'";
  size_t p = h.find(k1);
  if (p == std::string::npos) return false;
  p = h.find(':', p + k1.size());
  if (p == std::string::npos) return false;
  ++p;
  while (p < h.size() && h[p] == ' ') ++p;
  int depth = 0;
  size_t e = p;
  for (; e < h.size(); ++e) {
    const char c = h[e];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
    if (depth < 0) break;
  }
  if (e < h.size() && h[e] == ')') ++e;
  *out = h.substr(p, e - p);
  while (!out->empty() && out->back() == ' ') out->pop_back();
  return true;
}

}  // namespace

Expected<NpyArray> ReadNpy(const std::string& path) {
  auto bad = [&](const std::string& m) { return Status(StatusCode::kParseError, path + ": " + m); };
  std::ifstream in;
  if (Status st = detail::OpenForReading(path, &in); !st.ok()) return st;
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) return bad("not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t hlen = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) return bad("truncated header");
    hlen = static_cast<uint32_t>(b[0] | (b[1] << 8));
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) return bad("truncated header");
    hlen = static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8) | (static_cast<uint32_t>(b[2]) << 16) |
           (static_cast<uint32_t>(b[3]) << 24);
  } else {
    return bad("unsupported .npy format version " + std::to_string(major));
  }
  if (hlen > (1u << 20)) return bad("header too large");
  std::string header(hlen, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(hlen))) return bad("truncated header");
  std::string descr, order, shape;
  if (!HeaderField(header, "descr", &descr)) return bad("header has no 'descr'");
  if (!HeaderField(header, "fortran_order", &order)) return bad("header has no 'fortran_order'");
  if (!HeaderField(header, "shape", &shape)) return bad("header has no 'shape'");
  size_t elem = 0;
  if (descr == "'<f4'")
    elem = 4;
  else if (descr == "'<f2'")
    elem = 2;
  else
    return bad("'descr' " + descr + " is not supported (only '<f4' and '<f2')");
  if (order != "False") return bad("'fortran_order' must be False (C order), got " + order);
  NpyArray a;
  {
    std::string s;
    for (char c : shape)
      if (c != '(' && c != ')' && c != ' ') s += c;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.empty()) continue;
      for (char c : item)
        if (c < '0' || c > '9') return bad("'shape' is malformed: " + shape);
      if (item.size() > 12) return bad("'shape' entry too large: " + item);
      a.shape.push_back(std::stoll(item));
    }
  }
  uint64_t count = 1;
  for (int64_t d : a.shape) {
    // Checked: (2^34, 2^30) would wrap to 0 elements and "read" a file with no data.
    if (!detail::CheckedMul<uint64_t>(count, static_cast<uint64_t>(d), &count) || count > (uint64_t{1} << 34))
      return bad("array too large: 'shape' " + shape + " holds more than 2^34 values");
  }
  // Never allocate more than the file can hold: a short header may declare a huge array.
  const std::streampos here = in.tellg();
  in.seekg(0, std::ios::end);
  const std::streamoff rest = in.tellg() - here;
  in.seekg(here);
  if (rest < 0 || static_cast<uint64_t>(rest) < count * elem)
    return bad("data truncated: expected " + std::to_string(count * elem) + " bytes, the file holds " +
               std::to_string(rest < 0 ? 0 : rest));
  std::vector<char> raw(static_cast<size_t>(count) * elem);
  if (!in.read(raw.data(), static_cast<std::streamsize>(raw.size())))
    return bad("data truncated: expected " + std::to_string(raw.size()) + " bytes");
  a.data.resize(static_cast<size_t>(count));
  if (raw.empty()) {
    // a zero-sized dimension: nothing to copy
  } else if (elem == 4) {
    std::memcpy(a.data.data(), raw.data(), raw.size());
  } else {
    ToFloat32(raw.data(), DType::kF16, static_cast<int64_t>(a.data.size()), a.data.data());
  }
  return a;
}

Status WriteNpy(const std::string& path, const std::vector<int64_t>& shape, const std::vector<float>& data) {
  std::string dims;
  uint64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0)
      return Status(StatusCode::kInvalidArgument,
                    path + ": shape[" + std::to_string(i) + "] = " + std::to_string(shape[i]) + " is negative");
    dims += (i ? ", " : "") + std::to_string(shape[i]);
    if (!detail::CheckedMul<uint64_t>(count, static_cast<uint64_t>(shape[i]), &count)) {
      std::string msg = path;
      msg.append(": shape (").append(dims).append(") holds more values than 2^64");
      return Status(StatusCode::kInvalidArgument, msg);
    }
  }
  if (shape.size() == 1) dims += ",";  // "(5,)"
  if (count != data.size())
    return Status(StatusCode::kInvalidArgument,
                  path + ": shape holds " + std::to_string(count) + " values, data " + std::to_string(data.size()));
  std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out) return Status(StatusCode::kIoError, path + ": cannot open for writing");
  out.write("\x93NUMPY\x01\x00", 8);
  const char len[2] = {static_cast<char>(h.size() & 0xFF), static_cast<char>((h.size() >> 8) & 0xFF)};
  out.write(len, 2);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(float)));
  if (!out) return Status(StatusCode::kIoError, path + ": write failed");
  return OkStatus();
}

}  // namespace sparsebudget
