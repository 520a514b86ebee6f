// Linked into every test binary. LeakSanitizer's exit-time check stops every thread with a
// tracer, and that tracer now and then crashes (signal 11) in a process where UCX's threads ran,
// failing a test whose work passed (seen in CI: TransPaths.UcxCarriesTransfersWhenNamed). So in a
// process that loaded UCX the exit-time leak check is off; every other test process keeps it.
// LeakSanitizer asks this hook (sanitizer interface) before its check; without it linked in, it
// is a function nobody calls.
#include <dlfcn.h>

extern "C" int __lsan_is_turned_off() {
  void* ucp = ::dlopen("libucp.so.0", RTLD_NOW | RTLD_NOLOAD);
  if (!ucp) return 0;
  ::dlclose(ucp);  // the NOLOAD open took a reference
  return 1;
}
