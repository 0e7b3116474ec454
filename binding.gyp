# Builds build/Release/sfm_native.node and sfm_folder.node (see scripts/build-native.mjs,
# src/fs/native.ts and src/fs/folder-addon.ts).
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
    }
  ]
}
