"""Media handling shared by the vehicle and the cloud: resizing, codecs, image quality.

- :mod:`cloudseg.media.resize`: the one downsampling function (numpy and torch twins) and the
  bilinear restore.
- :mod:`cloudseg.media.codecs`: the interface of a per-stream encoder and decoder;
  :mod:`cloudseg.media.h264` (PyAV) and :mod:`cloudseg.media.image_codecs` (JPEG/PNG, OpenCV)
  implement it (``make_encoder`` / ``make_decoder`` in :mod:`cloudseg.media.stream`).
- :mod:`cloudseg.media.quality`: PSNR and SSIM.
- :mod:`cloudseg.media.image`: the pixels of a sensor_msgs/Image (any message object) as numpy.
- :mod:`cloudseg.media.stream`: the vehicle's compressor and the cloud's decoder for one stream.

Nothing here imports rclpy or ROS messages; torch is imported only by ``downsample_tensor``.
"""
