// Compiled by `make check` with g++ alone (no TFLite-Micro tree): drives the bundle's generated
// edgekit_register_<model>_ops template with a recorder that notes each MicroMutableOpResolver method it
// calls, and prints that list with the arena and input/output constants as one JSON line.
//
// The Makefile passes -DEDGEKIT_MODEL_DATA_H="<model>_model_data.h" -DEDGEKIT_MODEL_OPS_H="<model>_model_ops.h".
#include <cstdint>
#include <cstdio>

#ifndef EDGEKIT_MODEL_OPS_H
#error "define EDGEKIT_MODEL_DATA_H and EDGEKIT_MODEL_OPS_H (apps/mcu/Makefile does, from BUNDLE=...)"
#endif
#include EDGEKIT_MODEL_DATA_H
#include EDGEKIT_MODEL_OPS_H

#if !defined(EDGEKIT_OPS_HEADER_VERSION) || EDGEKIT_OPS_HEADER_VERSION != 1
#error "this harness reads edgekit's ops header version 1: rebuild the bundle with this edgekit, or use the apps/mcu that shipped with the bundle's edgekit"
#endif

namespace {

// Has one method per op of the header's X-macro, each recording its own name; status is what every
// call returns (0 is kTfLiteOk), to check that the template counts failed calls.
struct Recorder {
  explicit Recorder(int status) : status_(status) {}
  const char* called[EDGEKIT_MODEL_OP_COUNT + 1] = {};
  int calls = 0;

#define EDGEKIT_RECORD_METHOD_(method, op) \
  int method() { return Record(#method); }
  EDGEKIT_MODEL_OPS(EDGEKIT_RECORD_METHOD_)
#undef EDGEKIT_RECORD_METHOD_

 private:
  int Record(const char* name) {
    if (calls <= EDGEKIT_MODEL_OP_COUNT) called[calls] = name;
    ++calls;
    return status_;
  }
  int status_;
};

void PrintStrings(const char* key, const char* const* values, int n) {
  std::printf("\"%s\": [", key);
  for (int i = 0; i < n; ++i) std::printf("%s\"%s\"", i ? ", " : "", values[i]);
  std::printf("], ");
}

#define EDGEKIT_PRINT_TENSORS_(key, Side)                                                        \
  do {                                                                                          \
    std::printf("\"%s\": [", key);                                                              \
    for (int i = 0; i < EDGEKIT_MODEL_K(Side##Count); ++i) {                                     \
      std::printf("%s{\"dtype\": \"%s\", \"tflite_type\": %d, \"scale\": %.9g, \"zero_point\": %d, " \
                  "\"elements\": %d, \"shape\": [",                                             \
                  i ? ", " : "", EDGEKIT_MODEL_K(Side##Dtype)[i], EDGEKIT_MODEL_K(Side##TfLiteType)[i], \
                  static_cast<double>(EDGEKIT_MODEL_K(Side##Scale)[i]),                         \
                  EDGEKIT_MODEL_K(Side##ZeroPoint)[i], EDGEKIT_MODEL_K(Side##Elements)[i]);     \
      for (int d = 0; d < EDGEKIT_MODEL_K(Side##Rank)[i]; ++d)                                  \
        std::printf("%s%d", d ? ", " : "", EDGEKIT_MODEL_K(Side##Shape)[i][d]);                  \
      std::printf("]}");                                                                        \
    }                                                                                           \
    std::printf("]");                                                                           \
  } while (0)

}  // namespace

int main() {
  Recorder ok(0);
  const int failed = edgekit_register_model_ops(ok);
  Recorder refusing(1);
  const int failed_when_refused = edgekit_register_model_ops(refusing);

#define EDGEKIT_OP_NAME_(method, op) op,
  const char* const op_names[] = {EDGEKIT_MODEL_OPS(EDGEKIT_OP_NAME_)};
#undef EDGEKIT_OP_NAME_
  const int recorded = ok.calls <= EDGEKIT_MODEL_OP_COUNT ? ok.calls : EDGEKIT_MODEL_OP_COUNT;

  std::printf("{\"model\": \"%s\", ", EDGEKIT_MODEL_NAME);
  PrintStrings("methods", ok.called, recorded);
  PrintStrings("ops", op_names, static_cast<int>(sizeof op_names / sizeof op_names[0]));
  std::printf("\"calls\": %d, \"op_count\": %d, \"failed\": %d, \"failed_when_refused\": %d, ", ok.calls,
              EDGEKIT_MODEL_OP_COUNT, failed, failed_when_refused);
  std::printf("\"arena_bytes\": %u, \"arena_measured_bytes\": %u, ", EDGEKIT_MODEL_ARENA_BYTES,
              EDGEKIT_MODEL_ARENA_MEASURED_BYTES);
  std::printf("\"data_len\": %u, \"data_aligned16\": %s, ", EDGEKIT_MODEL_DATA_LEN,
              reinterpret_cast<std::uintptr_t>(EDGEKIT_MODEL_DATA) % 16 == 0 ? "true" : "false");
  EDGEKIT_PRINT_TENSORS_("inputs", Input);
  std::printf(", ");
  EDGEKIT_PRINT_TENSORS_("outputs", Output);
  std::printf("}\n");
  return failed == 0 && ok.calls == EDGEKIT_MODEL_OP_COUNT ? 0 : 1;
}
