/* net_ops_table.h: the network layer's answers to what the core asks of it (core/net_ops.h).
 * Owns the one filled-in table; main.c (and unit tests) set host->net to it. */
#ifndef WSHOST_NET_OPS_TABLE_H
#define WSHOST_NET_OPS_TABLE_H

#include "net_ops.h"

extern const struct net_ops net_ops_table;

#endif
