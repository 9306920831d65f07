#define SIDESTEP_TEST_MAIN
#include "check.h"
