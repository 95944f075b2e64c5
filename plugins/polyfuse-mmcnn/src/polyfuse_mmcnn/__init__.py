"""polyfuse-mmcnn: the ``mmcnn`` fuser, fusion inside a CNN over one modality's spatial feature map."""
