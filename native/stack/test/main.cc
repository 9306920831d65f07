// The stack test binary's main(): runs every TEST in native/stack/test
// (or those whose names contain argv[1]).
#define SIDESTEP_TEST_MAIN
#include "check.h"
