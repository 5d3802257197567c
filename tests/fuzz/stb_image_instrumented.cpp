// stb_image compiled into fuzz_image itself, so the fuzzer's coverage and
// AddressSanitizer reach inside the decoder (the system libstb is not
// instrumented). Its definitions take precedence over libstb's at link time.
// Only the fuzz build does this; the library uses libstb.
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
