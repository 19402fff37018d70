//! Read-only CD images written in-process: the cloud-init NoCloud seed and
//! Packer's `cd_files`/`cd_content`.
