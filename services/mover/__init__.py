"""The mover: runs the C-STORE sub-operations of C-MOVE and of REST sends, reporting progress in the job."""
