{
  "targets": [
    {
      "target_name": "ascend_host",
      "sources": ["src/native/addon.c", "src/native/attention.c", "src/native/kernels.c", "src/native/m3.c", "src/native/pool.c"],
      "cflags": ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"],
      "cflags!": ["-O2"],
      "ldflags": ["-pthread"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
