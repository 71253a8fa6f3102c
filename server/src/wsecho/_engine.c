/* wsecho._engine: the compiled hot path of wsecho's lean server (Linux, epoll).
 *
 * An Engine holds established WebSocket connections that have no event-loop transport. Its
 * epoll descriptor is registered once with the event loop; when it is readable, poll() serves
 * every ready connection: one recv, the echo of each complete frame of the hot path, one send.
 *
 * The hot path is a masked, unfragmented text or binary frame with a 7- or 16-bit length of at
 * most max_payload, no reserved bits, and (text) valid UTF-8. Anything else ejects the
 * connection: it leaves the engine, and poll() returns its descriptor with the echoes not yet
 * sent and the input not yet parsed, for the Python path to continue exactly where the engine
 * stopped. So the engine keeps no state per connection between two calls.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Ready connections served per poll() at most; the rest stay ready for the next call. */
#define MAX_EVENTS 256
/* One recv per ready connection reads at most this much: a frame larger than that ejects. */
#define BUFFER_SIZE (128 * 1024)

/* Why poll() returns a connection (the fourth item of its tuples). */
#define EJECT_HANDOVER 0 /* something for the Python path: a frame, a piece of one, a full socket */
#define EJECT_CLOSED 1   /* end of stream or a socket error: the connection is over */

typedef struct {
    PyObject_HEAD
    int epfd;
    Py_ssize_t max_payload;
    unsigned char *held; /* held[fd] != 0: fd is in this engine */
    Py_ssize_t held_size;
    unsigned char *in;
    unsigned char *out;
    unsigned long long messages;
    unsigned long long bytes;
    Py_ssize_t connections;
    unsigned long long ejections;
} Engine;

/* Is data[0:size) valid UTF-8 (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF)? */
static int
valid_utf8(const unsigned char *data, Py_ssize_t size)
{
    Py_ssize_t i = 0;
    while (i < size) {
        /* ASCII eight bytes at a time */
        while (i + 8 <= size) {
            uint64_t word;
            memcpy(&word, data + i, 8);
            if (word & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= size)
            break;
        unsigned char c = data[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        Py_ssize_t need;
        unsigned char low = 0x80, high = 0xBF; /* the allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                low = 0xA0; /* overlong */
            else if (c == 0xED)
                high = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                low = 0x90; /* overlong */
            else if (c == 0xF4)
                high = 0x8F; /* beyond U+10FFFF */
        } else {
            return 0;
        }
        if (size - i <= need)
            return 0;
        if (data[i + 1] < low || data[i + 1] > high)
            return 0;
        for (Py_ssize_t k = 2; k <= need; k++) {
            if ((data[i + k] & 0xC0) != 0x80)
                return 0;
        }
        i += need + 1;
    }
    return 1;
}

static void
unmask(unsigned char *dst, const unsigned char *src, Py_ssize_t size, const unsigned char *key)
{
    uint64_t key8;
    uint32_t key4;
    memcpy(&key4, key, 4);
    key8 = ((uint64_t)key4 << 32) | key4;
    Py_ssize_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t word;
        memcpy(&word, src + i, 8);
        word ^= key8;
        memcpy(dst + i, &word, 8);
    }
    for (; i < size; i++)
        dst[i] = src[i] ^ key[i & 3];
}

static int
Engine_init(Engine *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_payload", NULL};
    Py_ssize_t max_payload;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n", kwlist, &max_payload))
        return -1;
    if (self->epfd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is already initialized");
        return -1;
    }
    if (max_payload < 0 || max_payload > 65535) {
        PyErr_SetString(PyExc_ValueError, "max_payload must be between 0 and 65535");
        return -1;
    }
    self->max_payload = max_payload;
    self->in = PyMem_RawMalloc(BUFFER_SIZE);
    self->out = PyMem_RawMalloc(BUFFER_SIZE);
    if (self->in == NULL || self->out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *
Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Engine *self = (Engine *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->epfd = -1;
    return (PyObject *)self;
}

static void
Engine_dealloc(Engine *self)
{
    /* Connections still held are closed with the engine (close() or eject_all() come first
     * in normal operation). */
    for (Py_ssize_t fd = 0; fd < self->held_size; fd++) {
        if (self->held[fd])
            close((int)fd);
    }
    if (self->epfd >= 0)
        close(self->epfd);
    PyMem_RawFree(self->held);
    PyMem_RawFree(self->in);
    PyMem_RawFree(self->out);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
check_open(Engine *self)
{
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the engine is closed");
        return -1;
    }
    return 0;
}

static PyObject *
Engine_fileno(Engine *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromLong(self->epfd);
}

static PyObject *
Engine_adopt(Engine *self, PyObject *arg)
{
    long number = PyLong_AsLong(arg);
    if (number == -1 && PyErr_Occurred())
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    int fd = (int)number;
    if (number < 0 || number > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "not a file descriptor");
        return NULL;
    }
    if (fd < self->held_size && self->held[fd]) {
        PyErr_Format(PyExc_ValueError, "descriptor %d is already in the engine", fd);
        return NULL;
    }
    if (fd >= self->held_size) {
        Py_ssize_t size = self->held_size ? self->held_size : 1024;
        while (size <= fd)
            size *= 2;
        unsigned char *held = PyMem_RawRealloc(self->held, size);
        if (held == NULL)
            return PyErr_NoMemory();
        memset(held + self->held_size, 0, size - self->held_size);
        self->held = held;
        self->held_size = size;
    }
    struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &event) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    self->held[fd] = 1;
    self->connections++;
    Py_RETURN_NONE;
}

/* Take fd out of the engine (it stays open: the caller owns it now). */
static void
release(Engine *self, int fd)
{
    epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL);
    self->held[fd] = 0;
    self->connections--;
    self->ejections++;
}

/* Append (fd, unsent, unparsed, reason) to `ejected` and release fd; -1 on a Python error. */
static int
eject(Engine *self, PyObject *ejected, int fd, const unsigned char *unsent, Py_ssize_t unsent_size,
      const unsigned char *unparsed, Py_ssize_t unparsed_size, int reason)
{
    PyObject *item = Py_BuildValue("(iy#y#i)", fd, (const char *)unsent, unsent_size,
                                   (const char *)unparsed, unparsed_size, reason);
    if (item == NULL)
        return -1;
    int failed = PyList_Append(ejected, item);
    Py_DECREF(item);
    if (failed)
        return -1;
    release(self, fd);
    return 0;
}

/* Serve one readable connection. */
static int
serve(Engine *self, PyObject *ejected, int fd)
{
    unsigned char *in = self->in;
    unsigned char *out = self->out;
    ssize_t got = recv(fd, in, BUFFER_SIZE, 0);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        return eject(self, ejected, fd, in, 0, in, 0, EJECT_CLOSED);
    }
    if (got == 0)
        return eject(self, ejected, fd, in, 0, in, 0, EJECT_CLOSED);
    Py_ssize_t end = got, pos = 0, out_size = 0;
    unsigned long long messages = 0, bytes = 0;
    while (end - pos >= 2) {
        unsigned char first = in[pos], second = in[pos + 1];
        if ((first != 0x81 && first != 0x82) || !(second & 0x80))
            break; /* not a whole text or binary message, or not masked */
        Py_ssize_t length = second & 0x7F, head = 2;
        if (length == 126) {
            if (end - pos < 4)
                break;
            length = ((Py_ssize_t)in[pos + 2] << 8) | in[pos + 3];
            head = 4;
        } else if (length == 127) {
            break;
        }
        if (length > self->max_payload || end - pos < head + 4 + length)
            break; /* too big for the hot path, or incomplete */
        const unsigned char *key = in + pos + head;
        unsigned char *payload = out + out_size + head;
        unmask(payload, key + 4, length, key);
        if (first == 0x81 && !valid_utf8(payload, length))
            break; /* the Python path fails the connection with 1007 */
        out[out_size] = first;
        if (head == 2) {
            out[out_size + 1] = (unsigned char)length;
        } else {
            out[out_size + 1] = 126;
            out[out_size + 2] = (unsigned char)(length >> 8);
            out[out_size + 3] = (unsigned char)length;
        }
        out_size += head + length;
        pos += head + 4 + length;
        messages++;
        bytes += length;
    }
    self->messages += messages;
    self->bytes += bytes;
    Py_ssize_t sent = 0;
    if (out_size) {
        ssize_t done = send(fd, out, out_size, MSG_NOSIGNAL);
        if (done < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return eject(self, ejected, fd, in, 0, in, 0, EJECT_CLOSED);
        } else {
            sent = done;
        }
    }
    if (sent < out_size || pos < end)
        return eject(self, ejected, fd, out + sent, out_size - sent, in + pos, end - pos,
                     EJECT_HANDOVER);
    return 0;
}

static PyObject *
Engine_poll(Engine *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0)
        return NULL;
    struct epoll_event events[MAX_EVENTS];
    int ready = epoll_wait(self->epfd, events, MAX_EVENTS, 0);
    if (ready < 0) {
        if (errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *ejected = PyList_New(0);
    if (ejected == NULL)
        return NULL;
    for (int i = 0; i < ready; i++) {
        if (serve(self, ejected, events[i].data.fd) < 0) {
            Py_DECREF(ejected);
            return NULL;
        }
    }
    return ejected;
}

static PyObject *
Engine_eject_all(Engine *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *fds = PyList_New(0);
    if (fds == NULL)
        return NULL;
    if (self->epfd < 0)
        return fds;
    for (Py_ssize_t fd = 0; fd < self->held_size; fd++) {
        if (!self->held[fd])
            continue;
        PyObject *number = PyLong_FromSsize_t(fd);
        if (number == NULL || PyList_Append(fds, number) < 0) {
            Py_XDECREF(number);
            Py_DECREF(fds);
            return NULL;
        }
        Py_DECREF(number);
        release(self, (int)fd);
    }
    return fds;
}

static PyObject *
Engine_close(Engine *self, PyObject *Py_UNUSED(ignored))
{
    for (Py_ssize_t fd = 0; fd < self->held_size; fd++) {
        if (self->held[fd]) {
            self->held[fd] = 0;
            self->connections--;
            close((int)fd);
        }
    }
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Engine_methods[] = {
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS,
     "The epoll descriptor: readable when a held connection is."},
    {"adopt", (PyCFunction)Engine_adopt, METH_O,
     "Hold a connected, non-blocking, upgraded socket descriptor (the engine owns it now)."},
    {"poll", (PyCFunction)Engine_poll, METH_NOARGS,
     "Serve the ready connections; the ejected ones as (fd, unsent, unparsed, reason)."},
    {"eject_all", (PyCFunction)Engine_eject_all, METH_NOARGS,
     "Release every held connection; their descriptors (the caller owns them now)."},
    {"close", (PyCFunction)Engine_close, METH_NOARGS,
     "Close the held connections and the epoll descriptor."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Engine_members[] = {
    {"messages", T_ULONGLONG, offsetof(Engine, messages), READONLY, "Messages echoed."},
    {"bytes", T_ULONGLONG, offsetof(Engine, bytes), READONLY, "Payload bytes echoed."},
    {"connections", T_PYSSIZET, offsetof(Engine, connections), READONLY,
     "Connections held now."},
    {"ejections", T_ULONGLONG, offsetof(Engine, ejections), READONLY,
     "Connections that left the engine."},
    {"max_payload", T_PYSSIZET, offsetof(Engine, max_payload), READONLY,
     "The largest payload echoed here."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "wsecho._engine.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Established WebSocket connections served in C (see the module's docstring).",
    .tp_new = Engine_new,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_members = Engine_members,
};

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "wsecho._engine",
    .m_doc = "The compiled hot path of wsecho: established connections served from one epoll.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__engine(void)
{
    if (PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&engine_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(module, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddIntConstant(module, "HANDOVER", EJECT_HANDOVER) < 0 ||
        PyModule_AddIntConstant(module, "CLOSED", EJECT_CLOSED) < 0 ||
        PyModule_AddIntConstant(module, "BUFFER_SIZE", BUFFER_SIZE) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
