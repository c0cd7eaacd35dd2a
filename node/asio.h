// Boost.Asio (with SSL) for the node. Boost 1.74's headers use std::exchange
// without including <utility>, so it comes first here, and every node file
// includes Asio through this header.
#ifndef MESHSYNC_NODE_ASIO_H_
#define MESHSYNC_NODE_ASIO_H_

// clang-format off
#include <utility>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
// clang-format on

#endif  // MESHSYNC_NODE_ASIO_H_
