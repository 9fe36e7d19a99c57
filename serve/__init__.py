"""The runtime behind the pages, with no Streamlit: where runs train and what a shared server
allows. Imports the engine only; ui/ and pages/ reach it through the calls named here.

    caps         Caps (NETLAB_* limits), CapError, RunDropped
    fair         FairSlot: training threads take turns by least slot time used
    runs         Run: a Trainer (and its side-by-side variants) stepping in a thread
    registry     RunRegistry: every live run of the server, the caps on them, the reaper
    worker_host  a worker process's main and WorkerHost, the runs one worker holds
    workers      WorkerPool and RemoteRun: runs trained in worker processes, seen from the page
    ray_runs     RayPool: runs trained on Ray actors any replica can reach
    uploads      UploadStore: the files browsers uploaded, per browser, bounded on disk
    settings     every NETLAB_* setting of the server, checked when it starts
"""
