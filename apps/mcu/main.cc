// edgekit MCU harness: runs an edgekit bundle's C array on TensorFlow Lite for Microcontrollers, the way
// firmware does: a MicroMutableOpResolver with exactly the model's ops, a static arena of the size edgekit
// measured, one inference on a sample, the top class printed.
//
// Everything model-specific comes from the bundle's two generated headers, through their EDGEKIT_MODEL_*
// names; the Makefile passes -DEDGEKIT_MODEL_DATA_H="<model>_model_data.h"
// -DEDGEKIT_MODEL_OPS_H="<model>_model_ops.h" (and -DEDGEKIT_SAMPLE_H="..." with SAMPLE=...). Build:
//   make TFLM_ROOT=/path/to/tflite-micro BUNDLE=/path/to/bundle
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

#if !defined(EDGEKIT_MODEL_DATA_H) || !defined(EDGEKIT_MODEL_OPS_H)
#error "define EDGEKIT_MODEL_DATA_H and EDGEKIT_MODEL_OPS_H (apps/mcu/Makefile does, from BUNDLE=...)"
#endif
#include EDGEKIT_MODEL_DATA_H
#include EDGEKIT_MODEL_OPS_H

#if !defined(EDGEKIT_OPS_HEADER_VERSION) || EDGEKIT_OPS_HEADER_VERSION != 1
#error "this harness reads edgekit's ops header version 1: rebuild the bundle with this edgekit, or use the apps/mcu that shipped with the bundle's edgekit"
#endif

#ifdef EDGEKIT_SAMPLE_H
#include EDGEKIT_SAMPLE_H  // const float kEdgekitSample[]: the first input's elements, in the file's layout
#endif

static_assert(EDGEKIT_MODEL_ARENA_BYTES > 0,
              "TFLite-Micro could not load this model when edgekit built it: see the ops header's comment");

namespace {

alignas(16) uint8_t g_arena[EDGEKIT_MODEL_ARENA_BYTES];

float SampleValue(int i) {
#ifdef EDGEKIT_SAMPLE_H
  return kEdgekitSample[i];
#else
  return static_cast<float>((i * 37) % 101) / 100.0f - 0.5f;  // a fixed pattern: no data on the board
#endif
}

template <typename T>
T Quantize(float x, float scale, int zero_point, long lo, long hi) {
  long q = std::lround(x / scale) + zero_point;
  return static_cast<T>(q < lo ? lo : (q > hi ? hi : q));
}

// The header's constants must describe the tensor the interpreter made (same file, same order).
bool SameTensor(const TfLiteTensor* t, int type, float scale, int zero_point, int elements) {
  int n = 1;
  for (int d = 0; d < t->dims->size; ++d) n *= t->dims->data[d];
  return static_cast<int>(t->type) == type && n == elements && t->params.zero_point == zero_point &&
         std::fabs(t->params.scale - scale) <= 1e-6f * std::fabs(scale);
}

}  // namespace

int main() {
  tflite::InitializeTarget();
  const tflite::Model* model = tflite::GetModel(EDGEKIT_MODEL_DATA);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("%s: schema version %d, this TFLM reads %d", EDGEKIT_MODEL_NAME,
                static_cast<int>(model->version()), TFLITE_SCHEMA_VERSION);
    return 1;
  }

  static tflite::MicroMutableOpResolver<EDGEKIT_MODEL_OP_COUNT> resolver;
  if (int failed = edgekit_register_model_ops(resolver)) {
    MicroPrintf("%d of %d ops failed to register", failed, EDGEKIT_MODEL_OP_COUNT);
    return 1;
  }
  static tflite::MicroInterpreter interpreter(model, resolver, g_arena, sizeof(g_arena));
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("AllocateTensors failed with a %u-byte arena", static_cast<unsigned>(sizeof(g_arena)));
    return 1;
  }

  TfLiteTensor* input = interpreter.input(0);
  const float in_scale = EDGEKIT_MODEL_K(InputScale)[0];
  const int in_zero = EDGEKIT_MODEL_K(InputZeroPoint)[0];
  const int in_count = EDGEKIT_MODEL_K(InputElements)[0];
  if (!SameTensor(input, EDGEKIT_MODEL_K(InputTfLiteType)[0], in_scale, in_zero, in_count)) {
    MicroPrintf("input 0 is not the tensor %s describes (type %d)", EDGEKIT_MODEL_NAME,
                static_cast<int>(input->type));
    return 1;
  }
  for (int i = 0; i < in_count; ++i) {
    const float x = SampleValue(i);
    if (input->type == kTfLiteInt8) {
      input->data.int8[i] = Quantize<int8_t>(x, in_scale, in_zero, -128, 127);
    } else if (input->type == kTfLiteInt16) {
      input->data.i16[i] = Quantize<int16_t>(x, in_scale, in_zero, -32768, 32767);
    } else if (input->type == kTfLiteFloat32) {
      input->data.f[i] = x;
    } else {
      MicroPrintf("input type %d: this harness feeds float32, int8 or int16", static_cast<int>(input->type));
      return 1;
    }
  }

  if (interpreter.Invoke() != kTfLiteOk) {
    MicroPrintf("Invoke failed");
    return 1;
  }

  const TfLiteTensor* output = interpreter.output(0);
  const float out_scale = EDGEKIT_MODEL_K(OutputScale)[0];
  const int out_zero = EDGEKIT_MODEL_K(OutputZeroPoint)[0];
  const int classes = EDGEKIT_MODEL_K(OutputElements)[0];
  if (!SameTensor(output, EDGEKIT_MODEL_K(OutputTfLiteType)[0], out_scale, out_zero, classes)) {
    MicroPrintf("output 0 is not the tensor %s describes", EDGEKIT_MODEL_NAME);
    return 1;
  }
  int best = 0;
  float best_score = -INFINITY;
  for (int i = 0; i < classes; ++i) {
    float score;
    if (output->type == kTfLiteInt8) {
      score = out_scale * static_cast<float>(output->data.int8[i] - out_zero);
    } else if (output->type == kTfLiteInt16) {
      score = out_scale * static_cast<float>(output->data.i16[i] - out_zero);
    } else if (output->type == kTfLiteFloat32) {
      score = output->data.f[i];
    } else {
      MicroPrintf("output type %d: this harness reads float32, int8 or int16", static_cast<int>(output->type));
      return 1;
    }
    if (score > best_score) {
      best = i;
      best_score = score;
    }
  }
  MicroPrintf("%s: top class %d (score %f); arena %u bytes used of %u (edgekit measured %u)", EDGEKIT_MODEL_NAME,
              best, static_cast<double>(best_score), static_cast<unsigned>(interpreter.arena_used_bytes()),
              static_cast<unsigned>(sizeof(g_arena)), EDGEKIT_MODEL_ARENA_MEASURED_BYTES);
  return 0;
}
