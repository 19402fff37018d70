//! Tests of the Google Cloud clients against local stand-ins: a token
//! server, the real Cloud Storage emulators (through a fault proxy where
//! faults are the point) and the Compute API fake.

mod auth;
mod compute;
mod sources;
mod storage;
