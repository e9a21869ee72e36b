/* The http plugin's records are the SDK's L7 capture records
 * (struct nw_l7_segment / nw_l7_close in netwatcher/bpf/types.h). */
#ifndef NETWATCHER_PLUGIN_HTTP_H
#define NETWATCHER_PLUGIN_HTTP_H

#include "netwatcher/bpf/types.h"

#endif
