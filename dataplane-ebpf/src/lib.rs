//! Empty on the host: lets dataplane/build.rs depend on this crate so that cargo
//! rebuilds the kernel object when it changes. The programs are in main.rs.
#![no_std]
