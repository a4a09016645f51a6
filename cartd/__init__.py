"""cartd: a Windows kernel-debugging crash cart."""
