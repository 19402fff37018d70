//! The source image: a local path or `file://` URL, checked against its
//! checksum.
