// Cooperative cancellation for everything the harness runs.
//
// request_stop() is async-signal-safe (an atomic store): `cowlab vm` calls it from its SIGINT and
// SIGTERM handlers.  Every wait loop in the harness polls stop_requested() at least every 100 ms;
// guests then stop their QEMU, delete their scratch disks and report kInfraError ("interrupted"),
// image builds kill their recipe and leave no partial cache entry.
#pragma once

namespace cowlab::harness {

void request_stop();
bool stop_requested();
// Which signal asked to stop (0 if none or not a signal): callers exit with 128 + it.
int stop_signal();
void request_stop_by_signal(int signo);
// SIGINT, SIGTERM and SIGHUP call request_stop_by_signal(); SIGPIPE is ignored.  Commands that
// run guests or builds install these so an interrupt cleans up instead of killing the process.
void install_stop_signal_handlers();

}  // namespace cowlab::harness
