/*
 * bev_io.h - socket I/O shortcuts for plain (unfiltered) socket bufferevents.
 *
 * A bufferevent queues what it is given and writes it once epoll says the socket is writable:
 * two epoll_ctl calls (arm, disarm) and a loop turn per reply. A plain socket with nothing
 * queued can take the bytes at once; bev_io_write() tries that and queues only the rest.
 *
 * A bufferevent also reads at most 4096 bytes per loop turn (libevent's EVBUFFER_MAX_READ), so a
 * 100 KB message costs 25 turns; bev_io_read() takes whatever more the socket already holds.
 */
#ifndef MXG_BEV_IO_H
#define MXG_BEV_IO_H

#include <stddef.h>

#include <event2/bufferevent.h>

/*
 * Writes data to bev: straight to the socket when bev is a plain socket bufferevent with nothing
 * queued, else (or for what the socket does not take) into its output buffer. Order is kept;
 * errors surface through the bufferevent's event callback as with bufferevent_write().
 */
void bev_io_write(struct bufferevent *bev, const void *data, size_t len);

/*
 * Appends to bev's input buffer up to max bytes that its socket holds now, with one readv.
 * Plain socket bufferevents only (else it does nothing). End of file and errors are left for the
 * bufferevent to find on its next read. Returns the bytes added.
 */
size_t bev_io_read(struct bufferevent *bev, size_t max);

/*
 * Turns off Nagle's algorithm on a TCP socket written with bev_io_write() (a no-op on other
 * sockets). Small writes that leave at once would otherwise wait for the peer's delayed ACK
 * (40 ms on Linux) whenever an earlier segment is still unacknowledged: a body's last chunk
 * and its final dot, say.
 */
void bev_io_nodelay(evutil_socket_t fd);

#endif
