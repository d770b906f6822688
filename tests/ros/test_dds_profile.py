"""config/fastdds_large_frames.xml: 640x480 camera frames (0.9 MB, above Fast DDS's default
0.5 MB shared-memory segment) reach a best-effort reader in another process at the camera's
rate. Both sides are their own processes: Fast DDS reads the profile once per process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ros_domain_id, ros_importorskip, ros_process_env

ros_importorskip("rclpy")

pytestmark = pytest.mark.slow

PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_large_frames.xml"
SECONDS = 3.0
RATE = 15.0  # Hz

SUBSCRIBER = """
import sys, time, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("profile_test_reader")
got = []
node.create_subscription(Image, "/profile_test/image", got.append, qos_profile_sensor_data)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
last, seen = time.monotonic(), 0
while time.monotonic() < end and not (got and time.monotonic() - last > 1.5):
    rclpy.spin_once(node, timeout_sec=0.05)
    if len(got) > seen:
        last, seen = time.monotonic(), len(got)
print(len(got), flush=True)
"""

PUBLISHER = """
import sys, time, rclpy, numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("profile_test_camera")
camera = node.create_publisher(Image, "/profile_test/image", qos_profile_sensor_data)
while camera.get_subscription_count() == 0:
    time.sleep(0.05)
pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8).tobytes()
frame = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=pixels)
seconds, rate = float(sys.argv[1]), float(sys.argv[2])
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    camera.publish(frame)
    sent += 1
    time.sleep(1.0 / rate)
print(sent, flush=True)
"""


def test_the_profile_carries_640x480_best_effort_frames_between_processes():
    env = ros_process_env(ros_domain_id("dds_profile"), FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE))
    reader = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, str(SECONDS + 60.0)],  # ends 1.5 s after the last frame
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout.readline().strip() == "ready"
        camera = subprocess.run(
            [sys.executable, "-c", PUBLISHER, str(SECONDS), str(RATE)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert camera.returncode == 0, camera.stderr
        sent = int(camera.stdout.split()[-1])
        output, _ = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
    received = int(output.split()[-1])
    assert sent >= RATE * SECONDS * 0.5, sent
    # Without the profile, 2 of 240 such frames arrived on this machine.
    assert received >= 0.8 * sent, (received, sent, os.environ.get("RMW_IMPLEMENTATION"))
