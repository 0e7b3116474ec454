# Builds build/Release/sfm_native.node, sfm_folder.node and sfm_chunker.node (the first and last share
# src/native/sfm_napi.h; see
# scripts/build-native.mjs, src/fs/native.ts, src/fs/folder-addon.ts and src/native/chunker-addon.ts).
{
  "target_defaults": {
    "defines": ["NAPI_VERSION=8"],
    "cflags!": ["-O3"],
    "cflags": ["-O2", "-Wall", "-Wextra"],
    "cflags_c": ["-std=gnu11"],
    "xcode_settings": {
      "GCC_OPTIMIZATION_LEVEL": "2"
    }
  },
  "targets": [
    {
      "target_name": "sfm_native",
      "sources": ["src/native/sfm_native.c"]
    },
    {
      "target_name": "sfm_folder",
      "sources": ["src/native/sfm_folder.c"]
    },
    {
      "target_name": "sfm_chunker",
      "sources": ["src/native/sfm_chunker.c"]
    }
  ]
}
