//! EC2 instances: the `backstop ec2` commands and retention end to end against moto
//! ([`moto`]), and the EC2 behaviour no emulator reproduces simulated with aws-smithy-mocks
//! ([`mocks`], every test named `mocked_…`).

#[path = "../support/mod.rs"]
mod support;

mod mocks;
mod moto;
