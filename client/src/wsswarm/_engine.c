/* wsswarm._engine: the compiled closed loop of a wsswarm worker (Linux, epoll).
 *
 * An Engine holds open closed-loop connections whose event-loop transport is paused: the
 * transport keeps owning the socket, the engine only reads and writes it. Its epoll descriptor
 * is registered once with the event loop; when it is readable, poll() serves every ready
 * connection with one recv. A read that is exactly the echo expected (the whole server frame,
 * compared byte for byte as ClosedConn.data_received does) is timed with CLOCK_MONOTONIC (the
 * clock of time.perf_counter_ns), its latency in microseconds goes to a buffer that Python takes
 * (take_latencies), and the frame of the current millisecond is sent with one send.
 *
 * Anything else ejects the connection: it leaves the engine, and poll() returns it with what the
 * engine knows of it (the bytes read and not processed, the send time and the echo expected of
 * the message in flight, the part of a frame the socket did not take) for the Python protocol to
 * continue from there: a split, coalesced or wrong echo, a ping, a close frame, end of stream, a
 * socket error, a full socket.
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
#include <time.h>
#include <unistd.h>

/* Ready connections served per poll() at most; the rest stay ready for the next call. */
#define MAX_EVENTS 1024
/* One recv reads at most this much; an echo of the 2017 message is ~30 bytes. A longer read
 * is not an exact echo and ejects with these bytes; the rest stays in the socket, in order. */
#define READ_SIZE 4096

typedef struct {
    PyObject *conn; /* the protocol object, NULL: no connection on this fd */
    PyObject *echo; /* the echo expected (bytes) of the message in flight */
    int64_t sent_ns;
} Slot;

typedef struct {
    PyObject_HEAD
    int epfd;
    PyObject *payload;   /* payload(now_ms) -> (frame, echo) of that millisecond */
    long long frame_ms;  /* the millisecond of `frame` and `echo`, -1: none yet */
    PyObject *frame;     /* bytes: the masked frame to send */
    PyObject *echo;      /* bytes: its echo */
    long long wall_offset_ns;
    Slot *slots; /* indexed by fd */
    Py_ssize_t nslots;
    Py_ssize_t held;
    int64_t *lat; /* latencies (µs) not yet taken */
    Py_ssize_t nlat, lat_cap;
    unsigned long long sent;     /* frames sent, since the last take_sent() */
    unsigned long long ejected;  /* connections ejected, cumulative */
} Engine;

static int64_t
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
slot_clear(Slot *slot)
{
    Py_CLEAR(slot->conn);
    Py_CLEAR(slot->echo);
    slot->sent_ns = 0;
}

static void
Engine_dealloc(Engine *self)
{
    PyObject_GC_UnTrack(self);
    for (Py_ssize_t i = 0; i < self->nslots; i++)
        slot_clear(&self->slots[i]);
    PyMem_Free(self->slots);
    PyMem_Free(self->lat);
    Py_CLEAR(self->payload);
    Py_CLEAR(self->frame);
    Py_CLEAR(self->echo);
    if (self->epfd >= 0)
        close(self->epfd);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Engine_traverse(Engine *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        Py_VISIT(self->slots[i].conn);
        Py_VISIT(self->slots[i].echo);
    }
    Py_VISIT(self->payload);
    Py_VISIT(self->frame);
    Py_VISIT(self->echo);
    return 0;
}

static int
Engine_clear(Engine *self)
{
    for (Py_ssize_t i = 0; i < self->nslots; i++)
        slot_clear(&self->slots[i]);
    Py_CLEAR(self->payload);
    Py_CLEAR(self->frame);
    Py_CLEAR(self->echo);
    return 0;
}

static int
Engine_init(Engine *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"payload", "wall_offset_ns", NULL};
    PyObject *payload;
    long long wall_offset_ns;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OL", kwlist, &payload, &wall_offset_ns))
        return -1;
    if (!PyCallable_Check(payload)) {
        PyErr_SetString(PyExc_TypeError, "payload must be callable");
        return -1;
    }
    if (self->epfd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "Engine already initialised");
        return -1;
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    Py_INCREF(payload);
    self->payload = payload;
    self->wall_offset_ns = wall_offset_ns;
    self->frame_ms = -1;
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

/* The frame and echo of millisecond `now_ms` (asked of Python when the millisecond changed). */
static int
current_frame(Engine *self, long long now_ms)
{
    if (now_ms == self->frame_ms && self->frame != NULL)
        return 0;
    PyObject *pair = PyObject_CallFunction(self->payload, "L", now_ms);
    if (pair == NULL)
        return -1;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
        !PyBytes_Check(PyTuple_GET_ITEM(pair, 0)) || !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
        Py_DECREF(pair);
        PyErr_SetString(PyExc_TypeError, "payload() must return (frame: bytes, echo: bytes)");
        return -1;
    }
    Py_XSETREF(self->frame, Py_NewRef(PyTuple_GET_ITEM(pair, 0)));
    Py_XSETREF(self->echo, Py_NewRef(PyTuple_GET_ITEM(pair, 1)));
    self->frame_ms = now_ms;
    Py_DECREF(pair);
    return 0;
}

static int
append_latency(Engine *self, int64_t us)
{
    if (self->nlat == self->lat_cap) {
        Py_ssize_t cap = self->lat_cap ? self->lat_cap * 2 : 4096;
        int64_t *lat = PyMem_Realloc(self->lat, (size_t)cap * sizeof(int64_t));
        if (lat == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->lat = lat;
        self->lat_cap = cap;
    }
    self->lat[self->nlat++] = us;
    return 0;
}

static int
grow_slots(Engine *self, int fd)
{
    if (fd < self->nslots)
        return 0;
    Py_ssize_t n = self->nslots ? self->nslots : 1024;
    while (n <= fd)
        n *= 2;
    Slot *slots = PyMem_Realloc(self->slots, (size_t)n * sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(slots + self->nslots, 0, (size_t)(n - self->nslots) * sizeof(Slot));
    self->slots = slots;
    self->nslots = n;
    return 0;
}

PyDoc_STRVAR(adopt_doc,
"adopt(conn, fd, sent_ns, echo)\n--\n\n"
"Take over the connection on `fd` (its transport paused, nothing left in its write buffer)\n"
"with one message in flight: sent at `sent_ns` (perf_counter_ns), `echo` expected back.");

static PyObject *
Engine_adopt(Engine *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "adopt(conn, fd, sent_ns, echo)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[1]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    long long sent_ns = PyLong_AsLongLong(args[2]);
    if (sent_ns == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_ValueError, "adopt() needs an fd >= 0 and the echo as bytes");
        return NULL;
    }
    if (grow_slots(self, (int)fd) < 0)
        return NULL;
    Slot *slot = &self->slots[fd];
    if (slot->conn != NULL) {
        PyErr_Format(PyExc_ValueError, "fd %ld is already in the engine", fd);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = (int)fd};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, (int)fd, &ev) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    slot->conn = Py_NewRef(args[0]);
    slot->echo = Py_NewRef(args[3]);
    slot->sent_ns = sent_ns;
    self->held++;
    Py_RETURN_NONE;
}

/* Remove fd from the engine; a new reference to (conn, data, sent_ns, echo, unsent). */
static PyObject *
eject(Engine *self, int fd, const char *data, Py_ssize_t size, PyObject *unsent)
{
    Slot *slot = &self->slots[fd];
    epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL); /* fails only if fd was closed: no matter */
    PyObject *echo = slot->echo ? slot->echo : Py_None;
    PyObject *item = Py_BuildValue("(Oy#LOO)", slot->conn, data, size, (long long)slot->sent_ns,
                                   echo, unsent ? unsent : Py_None);
    slot_clear(slot);
    self->held--;
    self->ejected++;
    return item;
}

static int
push(PyObject **list, PyObject *item)
{
    if (item == NULL)
        return -1;
    if (*list == NULL && (*list = PyList_New(0)) == NULL) {
        Py_DECREF(item);
        return -1;
    }
    int rc = PyList_Append(*list, item);
    Py_DECREF(item);
    return rc;
}

PyDoc_STRVAR(poll_doc,
"poll() -> list | None\n--\n\n"
"Serve every ready connection; the ejected ones as (conn, data, sent_ns, echo, unsent), or\n"
"None when none was ejected.");

static PyObject *
Engine_poll(Engine *self, PyObject *Py_UNUSED(ignored))
{
    struct epoll_event events[MAX_EVENTS];
    char buf[READ_SIZE];
    PyObject *ejected = NULL;
    int n = epoll_wait(self->epfd, events, MAX_EVENTS, 0);
    if (n < 0) {
        if (errno == EINTR)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    for (int i = 0; i < n; i++) {
        int fd = events[i].data.fd;
        if (fd >= self->nslots || self->slots[fd].conn == NULL)
            continue;
        Slot *slot = &self->slots[fd];
        ssize_t got = recv(fd, buf, READ_SIZE, MSG_DONTWAIT);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (got <= 0) {
            /* End of stream or an error: the transport, resumed, finds it again (a socket error
             * reads as end of stream then) and ends the connection the usual way. */
            if (push(&ejected, eject(self, fd, buf, 0, NULL)) < 0)
                goto error;
            continue;
        }
        PyObject *echo = slot->echo;
        if (echo == NULL || got != PyBytes_GET_SIZE(echo) ||
            memcmp(buf, PyBytes_AS_STRING(echo), (size_t)got) != 0) {
            if (push(&ejected, eject(self, fd, buf, got, NULL)) < 0)
                goto error;
            continue;
        }
        int64_t now = monotonic_ns();
        /* Latency includes this process's handling of the echo, as on the Python path. */
        if (append_latency(self, (now - slot->sent_ns) / 1000) < 0)
            goto error;
        if (current_frame(self, (now + self->wall_offset_ns) / 1000000) < 0)
            goto error;
        slot = &self->slots[fd]; /* payload() ran Python code: look the slot up again */
        Py_SETREF(slot->echo, Py_NewRef(self->echo));
        slot->sent_ns = now;
        self->sent++;
        Py_ssize_t size = PyBytes_GET_SIZE(self->frame);
        ssize_t put = send(fd, PyBytes_AS_STRING(self->frame), (size_t)size,
                           MSG_DONTWAIT | MSG_NOSIGNAL);
        if (put < size) {
            /* A full socket or an error: the transport writes the rest (or finds the error). */
            Py_ssize_t done = put > 0 ? put : 0;
            PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(self->frame) + done,
                                                       size - done);
            if (rest == NULL)
                goto error;
            int rc = push(&ejected, eject(self, fd, buf, 0, rest));
            Py_DECREF(rest);
            if (rc < 0)
                goto error;
        }
    }
    if (ejected == NULL)
        Py_RETURN_NONE;
    return ejected;
error:
    Py_XDECREF(ejected);
    return NULL;
}

PyDoc_STRVAR(release_all_doc,
"release_all() -> list\n--\n\n"
"Give every connection back: a list of (conn, sent_ns, echo).");

static PyObject *
Engine_release_all(Engine *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t fd = 0; fd < self->nslots; fd++) {
        Slot *slot = &self->slots[fd];
        if (slot->conn == NULL)
            continue;
        epoll_ctl(self->epfd, EPOLL_CTL_DEL, (int)fd, NULL);
        PyObject *item = Py_BuildValue("(OLO)", slot->conn, (long long)slot->sent_ns,
                                       slot->echo ? slot->echo : Py_None);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
        slot_clear(slot);
        self->held--;
    }
    return out;
}

PyDoc_STRVAR(take_latencies_doc,
"take_latencies() -> bytes\n--\n\n"
"The latencies (µs) recorded since the last call, as the machine's int64 values (array('q')).");

static PyObject *
Engine_take_latencies(Engine *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyBytes_FromStringAndSize((const char *)self->lat,
                                              self->nlat * (Py_ssize_t)sizeof(int64_t));
    if (out != NULL)
        self->nlat = 0;
    return out;
}

PyDoc_STRVAR(take_sent_doc,
"take_sent() -> int\n--\n\nFrames sent since the last call.");

static PyObject *
Engine_take_sent(Engine *self, PyObject *Py_UNUSED(ignored))
{
    unsigned long long sent = self->sent;
    self->sent = 0;
    return PyLong_FromUnsignedLongLong(sent);
}

static PyObject *
Engine_fileno(Engine *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(self->epfd);
}

static PyMethodDef Engine_methods[] = {
    {"adopt", (PyCFunction)(void (*)(void))Engine_adopt, METH_FASTCALL, adopt_doc},
    {"poll", (PyCFunction)Engine_poll, METH_NOARGS, poll_doc},
    {"release_all", (PyCFunction)Engine_release_all, METH_NOARGS, release_all_doc},
    {"take_latencies", (PyCFunction)Engine_take_latencies, METH_NOARGS, take_latencies_doc},
    {"take_sent", (PyCFunction)Engine_take_sent, METH_NOARGS, take_sent_doc},
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS, "The engine's epoll descriptor."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Engine_members[] = {
    {"wall_offset_ns", T_LONGLONG, offsetof(Engine, wall_offset_ns), 0,
     "time.time_ns() - perf_counter_ns(): the 2017 payload's wall-clock ms"},
    {"held", T_PYSSIZET, offsetof(Engine, held), READONLY, "connections in the engine"},
    {"ejected", T_ULONGLONG, offsetof(Engine, ejected), READONLY,
     "connections ejected so far"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wsswarm._engine.Engine",
    .tp_doc = PyDoc_STR("Engine(payload, wall_offset_ns): the compiled closed loop"),
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Engine_new,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_traverse = (traverseproc)Engine_traverse,
    .tp_clear = (inquiry)Engine_clear,
    .tp_methods = Engine_methods,
    .tp_members = Engine_members,
};

PyDoc_STRVAR(hdr_counts_doc,
"hdr_counts(values, lowest, highest, sub_bucket_mask, sub_bucket_bits, half_count_magnitude,\n"
"           half_count) -> (counts, lo, hi)\n--\n\n"
"The HdrHistogram counts index of each value of `values` (a buffer of int64, e.g. array('q')),\n"
"clamped to [lowest, highest], as wsswarm.latency's Python loop computes it: {index: count},\n"
"the smallest and the largest clamped value. Only for a unit magnitude of 0.");

static PyObject *
hdr_counts(PyObject *module, PyObject *args)
{
    Py_buffer view;
    long long lowest, highest, mask;
    int bits, half_magnitude;
    long long half_count;
    if (!PyArg_ParseTuple(args, "y*LLLiiL", &view, &lowest, &highest, &mask, &bits,
                          &half_magnitude, &half_count))
        return NULL;
    PyObject *counts = NULL, *result = NULL;
    if (view.itemsize != (Py_ssize_t)sizeof(int64_t) || view.len % (Py_ssize_t)sizeof(int64_t) ||
        lowest < 1 || highest < lowest || bits < 1 || bits > 62) {
        PyErr_SetString(PyExc_ValueError, "hdr_counts: int64 values and a valid shape needed");
        goto done;
    }
    counts = PyDict_New();
    if (counts == NULL)
        goto done;
    const int64_t *values = view.buf;
    Py_ssize_t n = view.len / (Py_ssize_t)sizeof(int64_t);
    long long lo = highest, hi = 0;
    /* Runs of the same index (latencies cluster) are added to the dict once per run. */
    long long run_index = -1, run_count = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        long long index = -1;
        if (i < n) {
            long long value = values[i];
            if (value < lowest)
                value = lowest;
            else if (value > highest)
                value = highest;
            if (value < lo)
                lo = value;
            if (value > hi)
                hi = value;
            /* (value | mask).bit_length() - bits */
            int bucket = (64 - __builtin_clzll((unsigned long long)(value | mask))) - bits;
            index = ((long long)(bucket + 1) << half_magnitude) + (value >> bucket) - half_count;
            if (index == run_index) {
                run_count++;
                continue;
            }
        }
        if (run_count) {
            PyObject *key = PyLong_FromLongLong(run_index);
            if (key == NULL)
                goto done;
            PyObject *old = PyDict_GetItemWithError(counts, key);
            long long total = run_count;
            if (old != NULL)
                total += PyLong_AsLongLong(old);
            else if (PyErr_Occurred()) {
                Py_DECREF(key);
                goto done;
            }
            PyObject *value = PyLong_FromLongLong(total);
            int rc = value == NULL ? -1 : PyDict_SetItem(counts, key, value);
            Py_DECREF(key);
            Py_XDECREF(value);
            if (rc < 0)
                goto done;
        }
        run_index = index;
        run_count = 1;
    }
    result = Py_BuildValue("(OLL)", counts, lo, hi);
done:
    Py_XDECREF(counts);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef module_methods[] = {
    {"hdr_counts", hdr_counts, METH_VARARGS, hdr_counts_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "wsswarm._engine",
    .m_doc = "The compiled closed loop of a wsswarm worker.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__engine(void)
{
    if (PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&engine_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
