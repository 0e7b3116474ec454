# Builds build/Release/sfm_native.node (see scripts/build-native.mjs and src/fs/native.ts).
{
  "targets": [
    {
      "target_name": "sfm_native",
      "sources": ["src/native/sfm_native.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags!": ["-O3"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "cflags_c": ["-std=gnu11"],
      "xcode_settings": {
        "GCC_OPTIMIZATION_LEVEL": "2"
      }
    }
  ]
}
