// web_parity: the page's parity report (web/panels.h) from the native build,
// for web/test.sh to compare with the WebAssembly module's.
#include <cstdio>

#include "web/panels.h"

int main() {
    std::puts(minnow::web::parity_report().c_str());
    return 0;
}
