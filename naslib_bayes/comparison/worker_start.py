"""Imported only by the forkserver that starts a comparison's workers (its preload list).

Ctrl-C, which a terminal sends to the whole process group, is the main process's to act on
(it stops the workers). The forkserver hands each worker the SIGINT handler it had before it
began serving, i.e. after its preloads: ignored here, a worker ignores Ctrl-C from its first
instruction on, not only once its initializer has run (a Ctrl-C in between printed a worker's
traceback and broke the pool).
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
