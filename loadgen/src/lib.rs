//! loadgen: the load-test harness (under construction; see issue 5).
