"""``python -m medattn`` (also what ``torchrun -m medattn`` runs)."""

from medattn.cli import main

if __name__ == "__main__":
    main()
