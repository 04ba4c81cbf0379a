#!/usr/bin/env bash
# A few epochs of every paper-scale configuration on a GPU: speed, memory, and that nothing crashes.
# Usage: benchmarks/paper_scale_gpu.sh OUT_DIR   (the tnerv package importable: installed or PYTHONPATH=src)
# It runs the representation bench at paper scale (setting 1: 1280x720, 12.4M parameters) with every
# model on 120 frames of the bikes sample (upscaled) for 2 epochs, then the compression bench at paper
# scale (1920x1080, T-NeRV's 9.3M config, HNeRV at 4 sizes, x265) on 16 frames for 2 epochs.
# Epoch times extrapolate to the paper's runs: seconds per epoch x (frames / the paper's frames).
set -euo pipefail
out=${1:?give an output folder}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -m tnerv.cli bench representation --scale paper --sequences bikes --frames 60 --epochs 2 \
    --models nerv enerv cnerv ffnerv hnerv dnerv tnerv --out "$out/representation" --quiet
python3 -m tnerv.cli bench compression --scale paper --sequences bikes --frames 16 --epochs 2 \
    --models tnerv hnerv x265 --crf 27 37 --out "$out/compression" --quiet
