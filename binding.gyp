{
  "targets": [
    {
      "target_name": "sidestep",
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('native/addon').filter(f => f.endsWith('.cc')).map(f => 'native/addon/' + f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/stack').filter(f => f.endsWith('.cc')).map(f => 'native/stack/' + f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/link').filter(f => f.endsWith('.cc')).map(f => 'native/link/' + f).join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NAPI_DISABLE_CPP_EXCEPTIONS"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags": ["-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc": ["-std=c++20", "-fvisibility=hidden", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
