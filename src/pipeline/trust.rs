//! Where a token may be sent: https under qwen.ai / aliyuncs.com, hosts the user lists, loopback.
