"""The build toolchain: pull a published model, convert it to ONNX, gate it, quantize it.

It sits above the runtime and the runner (the gate scores a converted model on real faces with
the same runner as ``eval``); the runtime never imports it (a layer contract checks it), so
running a model never loads a converter.
"""
